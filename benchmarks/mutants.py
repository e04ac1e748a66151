"""Mutation testing by hand-made mutants: each one changes one line of the core the way a plausible bug
would, the tests that guard that code run against it, and a mutant the tests let through is a hole in
the suite. The mutants cover streaming, the codes-file checks, recipe coercion and the quantizer.

    python benchmarks/mutants.py                 # every mutant; the goal is at least 90% killed
    python benchmarks/mutants.py --only stream   # the mutants whose name starts so

The working tree is restored after each mutant (and on Ctrl-C); run it on a clean checkout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STREAM_TESTS = ["tests/test_speech.py", "tests/test_tokenize.py"]
CODES_TESTS = ["tests/test_tokenize.py", "tests/test_codes_metadata.py", "tests/test_bad_inputs.py"]
CONFIG_TESTS = ["tests/test_config.py"]
QUANTIZER_TESTS = ["tests/nn/test_quantize.py", "tests/nn/test_scalar.py"]

STREAM, CODES = "vqtoolkit/inference/stream.py", "vqtoolkit/inference/codes.py"

# name -> (file, original text, mutated text, tests that should kill it)
MUTANTS = {
    "stream-half-right-context": (
        STREAM, "min(end, stop + context)", "min(end, stop + context // 2)", STREAM_TESTS),
    "stream-no-left-context": (
        STREAM, "max(0, emitted - context)", "max(0, emitted)", STREAM_TESTS),
    "stream-context-not-rounded": (
        STREAM, "round_up(context, downsample)", "context", STREAM_TESTS),
    "stream-drops-too-much": (
        STREAM, "drop = emitted - context - buffer_start", "drop = emitted - buffer_start",
        STREAM_TESTS),
    "codes-code-equal-to-size": (
        CODES, "level.max() >= size", "level.max() > size", CODES_TESTS),
    "codes-negative-code": (
        CODES, "level.min() < 0 or ", "", CODES_TESTS),
    "codes-newer-version": (
        CODES, "meta.version > VERSION", "meta.version > VERSION + 1", CODES_TESTS),
    "codes-rank-mismatch": (
        CODES, "len(meta.original_shape) != len(meta.latent_grid)", "False", CODES_TESTS),
    "codes-chunk-range": (
        CODES, "not least <= value <= 2**40", "not value <= 2**40", CODES_TESTS),
    "config-bool-as-int": (
        "vqtoolkit/config.py", "return isinstance(value, int) and not isinstance(value, bool)",
        "return isinstance(value, int)", CONFIG_TESTS),
    "config-int-as-float": (
        "vqtoolkit/config.py", "return isinstance(value, int | float) and not isinstance(value, bool)",
        "return isinstance(value, int | float)", CONFIG_TESTS),
    "config-ranges-ignored": (
        "vqtoolkit/config.py", "and all(r.holds(value) for r in ranges)", "", CONFIG_TESTS),
    "config-tuple-length": (
        "vqtoolkit/config.py", "and len(args) != len(value)", "and False", CONFIG_TESTS),
    "quantizer-ema-decay-swapped": (
        "vqtoolkit/nn/quantize.py", "self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)",
        "self.ema_count.mul_(1 - self.decay).add_(counts, alpha=self.decay)", QUANTIZER_TESTS),
    "quantizer-no-commit-gradient": (
        "vqtoolkit/nn/quantize.py", "2 * grad_commit / residual.numel()", "0 * grad_commit", QUANTIZER_TESTS),
    "quantizer-argmax": (
        "vqtoolkit/nn/quantize.py", "torch.min(block, dim=1,", "torch.max(block, dim=1,", QUANTIZER_TESTS),
    "quantizer-dead-never": (
        "vqtoolkit/nn/quantize.py", "dead |= self.steps_unused >= self.dead_code_steps",
        "dead |= self.steps_unused > 10**9", QUANTIZER_TESTS),
    "fsq-no-offset": (
        "vqtoolkit/nn/scalar.py", "offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)",
        "offset = torch.zeros_like(self.levels)", QUANTIZER_TESTS),
    "lfq-batch-entropy-sign": (
        "vqtoolkit/nn/scalar.py", "per_sample - self.diversity * batch",
        "per_sample + self.diversity * batch", QUANTIZER_TESTS),
    "rotation-no-scale": (
        "vqtoolkit/nn/quantize.py", "    rotated = scale * rotated\n", "", QUANTIZER_TESTS),
}  # fmt: skip


def run_mutant(name: str, file: str, original: str, mutated: str, tests: list[str]) -> dict:
    path = ROOT / file
    source = path.read_text()
    if source.count(original) != 1:
        return {"mutant": name, "result": "stale (the original text is not found once)"}
    started = time.perf_counter()
    try:
        path.write_text(source.replace(original, mutated))
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
    finally:
        path.write_text(source)
    return {
        "mutant": name,
        "result": "killed" if done.returncode != 0 else "SURVIVED",
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="", help="run the mutants whose name starts with this")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    rows = []
    for name, mutant in MUTANTS.items():
        if name.startswith(args.only):
            rows.append(run_mutant(name, *mutant))
            print(f"{rows[-1]['mutant']}: {rows[-1]['result']}", file=sys.stderr, flush=True)
    killed = sum(r["result"] == "killed" for r in rows)
    print(f"mutants: {killed} of {len(rows)} killed ({killed / max(len(rows), 1):.0%}); goal 90%")
    for r in rows:
        if r["result"] != "killed":
            print(f"  {r['mutant']}: {r['result']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if killed >= 0.9 * len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
