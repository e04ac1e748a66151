"""Codebook health at a small budget: every shipped quantized recipe cut to 100 training steps, then the
fraction of its codes used on its whole held-out split (each codebook of a residual quantizer on its own).

    python benchmarks/codebook_health.py                  # 100 steps each
    python benchmarks/codebook_health.py --steps 50 --json health.json
    python benchmarks/codebook_health.py --recipes speech_vqvae optim.lr=1e-9   # extra recipe overrides
    python benchmarks/codebook_health.py --recipes speech_vqvae --train-usage   # and on training data

Goal: at least 90% of the codes in use in every recipe. With --train-usage, the same model's usage on as
many training examples (evenly spaced over the training split) as the held-out split has, so that a gap
between the two shows codes that only the training data reaches. The speech codec recipe trains on the
corpus of `vqt speech-corpus data/speech` when it is there, else on the shipped prompts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from peers import machine
from torch.utils.data import Subset

from vqtoolkit.config import load_recipe
from vqtoolkit.train.data import eval_loader
from vqtoolkit.train.evaluate import evaluate
from vqtoolkit.train.loop import Trainer

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data" / "speech"
RECIPES = ("image_vqvae", "video_vqvae", "speech_vqvae_paper", "speech_vqvae")
GOAL = 0.9


def least_used_stage(results: dict) -> float:
    """The used fraction of the least-used codebook (of the only one for a single quantizer)."""
    stages = [v for k, v in results.items() if k.startswith("codebook_used_fraction/")]
    return min(stages, default=results["codebook_used_fraction"])


def health(recipe_name: str, steps: int, folder: Path, extra: list[str], train_usage: bool) -> dict:
    overrides = [f"train.max_steps={steps}", "train.picture_every=0", f"train.out_dir={folder / recipe_name}"]
    overrides.append("train.eval_batches=0")  # usage over the whole held-out split, not the recipe's sample
    if recipe_name == "speech_vqvae":  # the corpus by its full path: the benchmark may run from anywhere
        have = (CORPUS / "train").is_dir()
        overrides += [
            f"data.path={CORPUS / 'train' if have else ''}",
            f"data.eval_path={CORPUS / 'test' if have else ''}",
        ]
    started = time.perf_counter()
    trainer = Trainer(load_recipe(ROOT / "recipes" / f"{recipe_name}.yaml", overrides + extra))
    results = trainer.fit()
    seen = {}
    if train_usage:
        train_set = trainer.train_set
        picks = torch.linspace(0, len(train_set) - 1, results["examples"]).long().unique().tolist()
        usage = evaluate(trainer.model, eval_loader(Subset(train_set, picks), 16), {}, trainer.device)
        seen = {
            "train_used_fraction": usage["codebook_used_fraction"],
            "train_least_used_stage": least_used_stage(usage),
            "train_examples": usage["examples"],
        }
    return {
        "recipe": recipe_name,
        "steps": steps,
        "used_fraction": results["codebook_used_fraction"],
        "least_used_stage": least_used_stage(results),
        "perplexity": results["codebook_perplexity"],
        "held_out_examples": results["examples"],
        **seen,
        "seconds": time.perf_counter() - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument(
        "--train-usage", action="store_true", help="also the usage on as many training examples"
    )
    parser.add_argument("overrides", nargs="*", help="recipe overrides for every recipe, e.g. optim.lr=1e-9")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.recipes.split(","):
            print(f"{name}: {args.steps} steps", file=sys.stderr, flush=True)
            rows.append(health(name, args.steps, Path(tmp), args.overrides, args.train_usage))
    print("| recipe | steps | codes used (held out) | least-used codebook | perplexity | held-out examples |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['recipe']} | {r['steps']} | {r['used_fraction']:.1%} | {r['least_used_stage']:.1%} | "
              f"{r['perplexity']:.1f} | {r['held_out_examples']} |")  # fmt: skip
    if args.train_usage:
        print("\n| recipe | codes used (as many training examples) | least-used codebook | examples |")
        print("| --- | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['recipe']} | {r['train_used_fraction']:.1%} | {r['train_least_used_stage']:.1%} | "
                  f"{r['train_examples']} |")  # fmt: skip
    worst = min(rows, key=lambda r: r["least_used_stage"])
    verdict = "met" if worst["least_used_stage"] >= GOAL else "MISSED"
    least = f"{worst['least_used_stage']:.1%} ({worst['recipe']})"
    print(f"codebook health at {args.steps} steps: least {least}; "
          f"goal >= {GOAL:.0%} {verdict} ({torch.get_num_threads()} threads)")  # fmt: skip
    if args.json:
        described = {"rows": rows, "overrides": args.overrides, "machine": machine()}
        Path(args.json).write_text(json.dumps(described, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
