"""The bad-input matrix by class: cases tried, held, tracebacks, data lost and peak memory, then fuzzing.

    python benchmarks/hostile_inputs.py                   # the matrix, then 1000 fuzz cases
    python benchmarks/hostile_inputs.py --fuzz-cases 0 --json hostile.json

The matrix is every test marked `hostile("class")` (tests/conftest.py records each case): a case *held*
when its test passed; a *traceback* is an exception that escaped a command or a reader; *data lost* is a
failed case of the "nothing lost" class; *wrong* is any other failed check. Peak memory is the largest
resident size of a `vqt` process that a case ran (a fresh interpreter with torch: about 400 MiB is the
floor) and the most a case grew the test process itself, for cases run in-process. Fuzzing
(benchmarks/fuzz.py) mutates real media, codes metadata and recipes; its peak is the most one case grew
its reader process. Exit code 1 when any case did not hold.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from fuzz import fuzz

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("cases", "held", "traceback", "data lost", "wrong", "vqt process MiB", "in-process MiB")


def run_matrix() -> tuple[list[dict], float]:
    with tempfile.TemporaryDirectory() as temp:
        figures = Path(temp) / "cases.jsonl"
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "hostile", "-p", "no:cacheprovider", "tests"],
            cwd=ROOT,
            env={**os.environ, "VQT_CASE_FIGURES": str(figures)},
            stdout=subprocess.DEVNULL,
            check=False,
        )
        seconds = time.perf_counter() - started
        lines = figures.read_text().splitlines() if figures.exists() else []
    return [json.loads(line) for line in lines], seconds


def by_class(cases: list[dict]) -> dict[str, dict]:
    rows: dict[str, dict] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
    for case in cases:
        row = rows[case["class"]]
        row["cases"] += 1
        row["held"] += case["held"]
        failed = not case["held"]
        row["traceback"] += failed and case["traceback"]
        row["data lost"] += failed and not case["traceback"] and case["class"] == "nothing lost"
        row["wrong"] += failed and not case["traceback"] and case["class"] != "nothing lost"
        row["vqt process MiB"] = max(row["vqt process MiB"], round(case["peak_process_mib"]))
        row["in-process MiB"] = max(row["in-process MiB"], round(case["growth_mib"]))
    return dict(sorted(rows.items()))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fuzz-cases", type=int, default=1000, help="fuzz cases after the matrix (0: none)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    cases, seconds = run_matrix()
    if not cases:
        print("error: the matrix recorded no cases (did pytest run?)", file=sys.stderr)
        return 1
    rows = by_class(cases)
    width = max(len(name) for name in rows)
    print(f"{'class':<{width}}  " + "  ".join(f"{c:>{max(6, len(c))}}" for c in COLUMNS))
    for name, row in rows.items():
        print(f"{name:<{width}}  " + "  ".join(f"{row[c]:>{max(6, len(c))}}" for c in COLUMNS))
    total = {c: sum(row[c] for row in rows.values()) for c in COLUMNS[:5]}
    print(f"{len(cases)} matrix cases in {seconds:.0f} s: {total['held']} held, "
          f"{total['traceback']} tracebacks, {total['data lost']} lost data, {total['wrong']} wrong; "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    for case in cases:
        if not case["held"]:
            print(f"  did not hold: {case['case']} ({case['class']})")
    fuzzed = None
    if args.fuzz_cases:
        fuzzed = fuzz(args.fuzz_cases, 0, 20.0, log=lambda line: None)
        totals = fuzzed["totals"]
        print(f"fuzz: {fuzzed['cases']} cases in {fuzzed['seconds']} s: {totals['ok']} read, "
              f"{totals['clean error']} refused in one line, {totals['unexpected']} unexpected, "
              f"{totals['crash']} crashes, {totals['hang']} hangs; the most one case grew its reader: "
              f"{max(fuzzed['peak_growth_mib'].values()):.0f} MiB")  # fmt: skip
    if args.json:
        figures = {"classes": rows, "cases": cases, "fuzz": fuzzed}
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    bad = sum(not case["held"] for case in cases)
    if fuzzed:
        bad += sum(fuzzed["totals"][o] for o in ("unexpected", "crash", "hang"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
