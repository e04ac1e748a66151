"""CPU threads: training steps and streaming tokenization with 1 and 2 torch threads, on an idle machine
and next to a busy process this benchmark starts itself. The default thread count of `vqt` (the cores
the load average leaves free, see vqtoolkit/threads.py) is chosen from these figures.

    python benchmarks/threads.py                  # 7 interleaved repeats of each
    python benchmarks/threads.py --quick --json threads.json

Workloads, each built once and timed with torch.set_num_threads switched between repeats:
- image step: one Trainer.train_step of recipes/image_vqvae.yaml (batch 64 of the shipped Fashion-MNIST);
- speech step: one Trainer.train_step of recipes/speech_vqvae.yaml before its discriminators start
  (batch 8 x 1 s of the shipped Asterisk prompts);
- tokenize: the shipped speech model's streaming encode of 30 s of real speech.
The busy process is one Python loop spinning on one core (another user's job). Medians of interleaved
repeats; the load average is read at each condition's end. Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from peers import machine

from vqtoolkit.config import load_recipe
from vqtoolkit.inference.tokenizer import Tokenizer
from vqtoolkit.rundir import resolve_model
from vqtoolkit.train.loop import Trainer

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "plugins" / "vqt_speech" / "data" / "asterisk_small"


def trainer_step(recipe: str, overrides: list[str], folder: Path):
    overrides = [*overrides, f"train.out_dir={folder / recipe}"]
    trainer = Trainer(load_recipe(ROOT / "recipes" / recipe, overrides))
    batch = torch.stack([trainer.train_set[i] for i in range(trainer.recipe.train.batch_size)])
    return lambda: trainer.train_step(batch)


def tokenize_step(folder: Path):
    from vqt_speech.io import read_audio, write_audio

    pieces = [read_audio(f)[0] for f in sorted(SPEECH.glob("*.g722"))]
    clip = folder / "talk.wav"
    write_audio(clip, torch.cat(pieces, 1)[:, : 30 * 16000], sample_rate=16000)
    tokenizer = Tokenizer.load(resolve_model("speech"), "cpu")
    return lambda: tokenizer.encode_file(clip)


def time_once(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def measure(workloads: dict, repeats: int) -> dict[str, dict[int, float]]:
    times = {name: {1: [], 2: []} for name in workloads}
    for _ in range(repeats):
        for name, work in workloads.items():
            for threads in (1, 2):
                torch.set_num_threads(threads)
                times[name][threads].append(time_once(work))
    return {name: {t: statistics.median(v) for t, v in by.items()} for name, by in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        workloads = {
            "image step": trainer_step("image_vqvae.yaml", ["train.picture_every=0"], folder),
            "speech step": trainer_step(
                "speech_vqvae.yaml",
                ["data.path=", "data.eval_path=", "adversarial.start_step=1000000"],
                folder,
            ),
            "tokenize 30 s": tokenize_step(folder),
        }
        for work in workloads.values():  # warm-up at both counts
            for threads in (1, 2):
                torch.set_num_threads(threads)
                work()
        results = {}
        for condition in ("idle", "busy"):
            spinner = None
            if condition == "busy":
                spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(1.0)
            try:
                results[condition] = {"seconds": measure(workloads, repeats)}
                results[condition]["load"] = os.getloadavg()[0]  # ours included
            finally:
                if spinner:
                    spinner.kill()
                    spinner.wait()
    print(f"{machine()}; {repeats} interleaved repeats, medians", file=sys.stderr)
    print("| workload | machine | 1 thread s | 2 threads s | 2 threads vs 1 |")
    print("| --- | --- | ---: | ---: | ---: |")
    for condition, result in results.items():
        for name, by in result["seconds"].items():
            print(f"| {name} | {condition} (load {result['load']:.1f}) | {by[1]:.3f} | {by[2]:.3f} | "
                  f"{by[1] / by[2]:.2f}x |")  # fmt: skip
    for condition, result in results.items():
        best = {name: min(by, key=by.get) for name, by in result["seconds"].items()}
        print(f"{condition}: fastest thread count {best}")
    if args.json:
        figures = {"machine": machine(), "repeats": repeats, **results}
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
