"""Redaction cost: microseconds to scrub one prompt, p50 and p99, by prompt size and capture mode.

Prompts are a five-word request and realistic code text: slices of this repository's own Python sources
(which talk about tokens, keys, secrets and passwords all the time, so the prefilter opens the heuristic
rules), 1, 4, 16 and 64 KiB, each clean and with secrets planted (one of each precise kind, plus a password and a secret
assignment). Each case is timed call by call (``time.perf_counter_ns``) after a warm-up, in this one
process, on a machine that may be shared: rerun it rather than trusting one run.

    .venv/bin/python bench/redaction.py [--rounds 2000]

The results go to bench/results/redaction.json; bench/report.py renders them into docs/privacy.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results import Run, add_json_argument

from aibridge.redaction import CaptureMode, CapturePolicy

ROOT = Path(__file__).resolve().parent.parent
SIZES_KIB = (1, 4, 16, 64)
SMALL = "please fix the failing test"
PLANTED = (
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "sk-proj-Tq3V9xL2mR8wK4pZ7nB1cY6hJ0sD5fGa",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    'password = "hunter2-Blue!"',
    "api_secret: Zx8kP2qLm9Vt4Rw7Yb3N",
)


def code_text() -> str:
    sources = sorted((ROOT / "services").rglob("*.py")) + sorted((ROOT / "aibridge").glob("*.py"))
    return "\n".join(path.read_text(encoding="utf-8") for path in sources)


def prompt(corpus: str, size: int, with_secrets: bool) -> str:
    text = corpus[:size] if size else SMALL
    if not with_secrets:
        return text
    if not size:
        return f"{SMALL} {PLANTED[1]}"
    step = size // (len(PLANTED) + 1)
    for index, secret in enumerate(PLANTED, 1):
        at = text.rfind("\n", 0, index * step) + 1
        text = text[:at] + secret + "\n" + text[at:]
    return text[: size + sum(len(s) + 1 for s in PLANTED)]


def timings(policy: CapturePolicy, text: str, rounds: int) -> list[float]:
    for _ in range(min(rounds, 200)):
        policy.user_text(text)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        policy.user_text(text)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="timed calls per case")
    add_json_argument(parser, "redaction")
    args = parser.parse_args()
    run = Run("redaction", {"rounds": args.rounds})
    corpus = code_text()
    rows = []
    print(f"{'mode':9} {'prompt':>7} {'secrets':>7} {'found':>5} {'p50 us':>8} {'p99 us':>8}")
    for mode in (CaptureMode.FULL, CaptureMode.REDACTED):
        policy = CapturePolicy.build(mode)
        for kib in (0, *SIZES_KIB):
            for with_secrets in (False, True):
                text = prompt(corpus, kib * 1024, with_secrets)
                found = policy.user_text(text)[1]
                samples = sorted(timings(policy, text, max(50, args.rounds // max(kib, 1))))
                p50 = statistics.median(samples)
                p99 = samples[min(len(samples) - 1, round(len(samples) * 0.99))]
                size = f"{kib} KiB" if kib else "5 words"
                rows.append(
                    {"mode": mode.value, "prompt": size, "secrets": with_secrets, "found": found, "p50_us": p50}
                    | {"p99_us": p99}
                )
                planted = "yes" if with_secrets else "no"
                print(f"{mode.value:9} {size:>7} {planted:>7} {found:>5} {p50:>8.1f} {p99:>8.1f}")
    run.write(args.json, {"rows": rows})


if __name__ == "__main__":
    main()
