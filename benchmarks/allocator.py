"""Training steps with glibc's allocator kept in the process (what `vqt train` does, see
vqtoolkit/memory.py::keep_freed_memory) against glibc's own settings (VQT_SYSTEM_MALLOC=1).

    python benchmarks/allocator.py                          # image and speech recipes, 100 steps, 2 rounds
    python benchmarks/allocator.py --recipes image_vqvae --steps 50 --rounds 3 --json allocator.json

Each run is a fresh `vqt train RECIPE train.max_steps=STEPS` process; the two settings alternate, in
the opposite order every other round. Reported per run: the trainer's own `train_seconds` (the steps
alone, no data loading or evaluation), the page faults and the peak resident memory of the whole
process (os.wait4), and the load average when it ended. Medians over the rounds.
Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from peers import machine

from vqtoolkit.memory import SYSTEM_MALLOC_ENV

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"kept": {}, "system": {SYSTEM_MALLOC_ENV: "1"}}


def train_run(recipe: str, steps: int, threads: int, env: dict, out_dir: Path) -> dict:
    """One `vqt train` process: its train_seconds, page faults and peak resident memory."""
    command = [sys.executable, "-m", "vqtoolkit", "--threads", str(threads), "train", "--overwrite"]
    command += [str(ROOT / "recipes" / f"{recipe}.yaml"), f"train.max_steps={steps}"]
    command += [f"train.out_dir={out_dir}"]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env={**os.environ, **env}, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        output, errors = stdout.read(), stderr.read()
    if process.returncode != 0:
        raise SystemExit(f"{recipe}: vqt train failed: {(errors.strip().splitlines() or ['?'])[-1]}")
    summary = json.loads(output[output.index("{") : output.rindex("}") + 1])
    return {
        "train_seconds": summary["train_seconds"],
        "minor_faults": usage.ru_minflt,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "load_average": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default="image_vqvae,speech_vqvae", help="comma-separated recipe names")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each run")
    parser.add_argument("--json", type=Path, help="write all results to this JSON file")
    args = parser.parse_args(argv)

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for recipe in args.recipes.split(","):
            runs = {name: [] for name in SETTINGS}
            for round_number in range(args.rounds):
                order = list(SETTINGS.items())
                for name, env in order[::-1] if round_number % 2 else order:  # kept first, then system first
                    run = train_run(recipe, args.steps, args.threads, env, Path(scratch) / name)
                    runs[name].append(run)
                    print(f"{recipe} round {round_number + 1} {name}: {run}", file=sys.stderr, flush=True)
            row = {"recipe": recipe, "steps": args.steps, "runs": runs}
            for name, values in runs.items():
                for key in ("train_seconds", "minor_faults", "peak_rss_mb"):
                    row[f"{name}_{key}"] = statistics.median(run[key] for run in values)
            row["speedup"] = row["system_train_seconds"] / row["kept_train_seconds"]
            results.append(row)

    print(f"{'recipe':<14} {'setting':<8} {'s / step':>9} {'page faults':>12} {'peak RSS MB':>12}")
    for row in results:
        for name in SETTINGS:
            print(
                f"{row['recipe']:<14} {name:<8} {row[f'{name}_train_seconds'] / args.steps:>9.3f} "
                f"{row[f'{name}_minor_faults']:>12,.0f} {row[f'{name}_peak_rss_mb']:>12,.0f}"
            )
        print(f"{row['recipe']:<14} kept memory: {row['speedup']:.2f}x the steps' speed")
    loads = [run["load_average"] for row in results for values in row["runs"].values() for run in values]
    load = f"load {min(loads):.1f}-{max(loads):.1f}"
    print(f"({args.threads} threads per run, {load}, medians of {args.rounds} rounds)")
    if args.json:
        report = {"benchmark": "allocator", "results": results, "machine": machine("cpu")}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
