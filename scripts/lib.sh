# Shared by scripts/up and scripts/test: create the virtual environment and install the project.
ensure_venv() {
  local extra="${1:-}"
  local python="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "AI Bridge needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
      exit 1
    fi
    "$python" -m venv .venv
  fi
  local stamp=".venv/.installed-${extra:-base}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "installing AI Bridge${extra:+ with its $extra extras} into .venv (the first time takes a few minutes) ..."
    local target="."
    [ -n "$extra" ] && target=".[$extra]"
    if ! { .venv/bin/python -m pip install --quiet --upgrade pip &&
           .venv/bin/python -m pip install --quiet -e "$target"; } >.venv/install.log 2>&1; then
      cat .venv/install.log >&2
      echo "installation failed (log: .venv/install.log)" >&2
      exit 1
    fi
    touch "$stamp"
  fi
}

# --- observability (issue 6): `promtool check metrics` runs in the test suite -------------------------
# Installs Debian's `prometheus` package (which ships promtool) when promtool is missing and we are root;
# otherwise says why tests/observability/test_promtool.py will skip (or fail, with CI=true).
ensure_promtool() {
  if command -v promtool >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "promtool not found and cannot install it (needs root and apt-get): install the 'prometheus' package" >&2
    return 0
  fi
  echo "installing promtool (Debian package prometheus)"
  local log
  log=$(mktemp)
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "installing the prometheus package failed; promtool checks will not run" >&2
  fi
  rm -f "$log"
}

# --- sessions pages (issue 17): tests/api/test_pages_browser.py drives headless Chromium ---------------
# Installs Debian's `chromium` and `chromium-driver` packages when Chromium is missing and we are root
# (Playwright's own browser download is not used); otherwise says why those tests will skip (or fail,
# with CI=true).
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium not found and cannot install it (needs root and apt-get): install the 'chromium' package" >&2
    return 0
  fi
  echo "installing Chromium (Debian packages chromium, chromium-driver)"
  local log
  log=$(mktemp)
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; } \
      >"$log" 2>&1; then
    cat "$log" >&2
    echo "installing the chromium package failed; the browser tests of the sessions pages will not run" >&2
  fi
  rm -f "$log"
}

# Run the suite with pytest's exit status, except that "collected nothing" (exit 5) passes only when
# arguments narrowed the run: the whole suite collecting no test is a failure.
run_pytest() {
  local status=0
  .venv/bin/pytest "$@" || status=$?
  if [ "$status" -eq 5 ]; then
    if [ "$#" -gt 0 ]; then
      echo "pytest collected no tests for the arguments given: $*"
      return 0
    fi
    echo "pytest collected no tests: the whole suite must never be empty" >&2
  fi
  return "$status"
}
