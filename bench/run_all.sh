#!/usr/bin/env bash
# Runs every benchmark in bench/ one after the other, each writing its JSON to bench/results/, then
# regenerates the tables of docs/performance.md and the sizing guide of docs/deploy.md from them.
#
#   bench/run_all.sh            full runs (about 30 minutes; the 10-million-row store is built once)
#   bench/run_all.sh --quick    shorter runs (about 15 minutes), for a shared or slow machine
#
# Run it on a machine with nothing else running: every process of a benchmark shares its cores.
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python

if [[ "${1:-}" == "--quick" ]]; then
  proxy=(--duration 8 --wrk-duration 5)
  ab=(--duration 6)
  recorder=(--events 50000 --seconds 10)
  runs=(--runs 30)
else
  proxy=()
  ab=()
  recorder=()
  runs=(--runs 60)
fi

command -v wrk >/dev/null || echo "wrk is not installed (apt-get install -y wrk): proxy throughput is skipped" >&2
"$python" bench/proxy_overhead.py "${proxy[@]}"
"$python" bench/proxy_ab.py "${ab[@]}" builtin aiohttp:AIBRIDGE_UPSTREAM_CLIENT=aiohttp
"$python" bench/budgets_ab.py "${ab[@]}"
"$python" bench/mcp_overhead.py "${ab[@]}"
"$python" bench/log_line.py
"$python" bench/recorder_throughput.py "${recorder[@]}"
"$python" bench/storage_size.py
"$python" bench/api_query.py --rebuild --rows 1000000 "${runs[@]}" --http
"$python" bench/api_query.py --rebuild --rows 10000000 "${runs[@]}" --http
"$python" bench/report.py
