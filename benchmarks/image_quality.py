"""Reconstruction quality of the image VQ-VAE recipe on the full Fashion-MNIST, side by side with the
same encoder/decoder around vector-quantize-pytorch's `VectorQuantize` (same K, D, decay and commitment
weight, its defaults otherwise), trained for the same steps on the same batches with the same seed.

Both models go through vqtoolkit's Trainer (same loop, optimizer, schedule and data order) in this one
process, one after the other, with the same thread count; both are evaluated by the same `evaluate`
on the test split: PSNR, SSIM, fraction of the K codes used and code perplexity.

    python benchmarks/image_quality.py             # the recipe's budget, all 10,000 test images
    python benchmarks/image_quality.py --quick     # 30 steps, 500 test images, under a minute
    python benchmarks/image_quality.py --steps 2000 --json quality.json bottleneck.dead_code_steps=50

Extra arguments are recipe overrides, applied to both models.
Needs `pip install vector-quantize-pytorch` and the Debian package dataset-fashion-mnist.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from peers import PEER, machine, paired_model
from torch.utils.data import Subset

from vqtoolkit.config import Recipe, load_recipe
from vqtoolkit.train import loop

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "image_vqvae.yaml"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")


class TimedTrainer(loop.Trainer):
    """The Trainer, noting when training ends (fit's final picture and checkpoint included, eval not)."""

    def evaluate(self) -> dict:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.trained_at, self.trained_cpu = time.perf_counter(), time.process_time()
        return super().evaluate()


def run(recipe: Recipe, run_dir: Path, peer: bool, test_images: int) -> dict:
    trainer = TimedTrainer(recipe, run_dir=run_dir, model=paired_model(recipe, peer))
    if test_images:
        trainer.eval_set = Subset(trainer.eval_set, range(min(test_images, len(trainer.eval_set))))
    start, start_cpu = time.perf_counter(), time.process_time()
    results = trainer.fit()
    done = time.perf_counter()
    return {
        **results,
        "train_seconds": trainer.trained_at - start,
        "train_cpu_seconds": trainer.trained_cpu - start_cpu,
        "eval_seconds": done - trainer.trained_at,
        "final_train_loss": _last_train_loss(trainer.run_dir),
    }


def _last_train_loss(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["split"] == "train"][-1]["loss"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 steps, 500 test images (under a minute)")
    parser.add_argument("--steps", type=int, help="training steps (default: the recipe's train.max_steps)")
    parser.add_argument("--test-images", type=int, help="evaluate on the first N test images (default: all)")
    parser.add_argument("--data", default=str(FASHION_MNIST), help="IDX folder of the full Fashion-MNIST")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--json", type=Path, help="write all results to this JSON file")
    parser.add_argument("overrides", nargs="*", help="recipe overrides for both models, e.g. optim.lr=2e-3")
    args = parser.parse_args(argv)

    data = Path(args.data)
    if not all((data / name).is_file() for name in IDX_FILES):
        print(
            f"error: the full Fashion-MNIST is not at {data} (needs {' and '.join(IDX_FILES)}); "
            "install it with: sudo apt-get install -y dataset-fashion-mnist",
            file=sys.stderr,
        )
        return 1
    try:
        import vector_quantize_pytorch  # noqa: F401
    except ImportError:
        print(f"error: the peer is missing; install it with: pip install {PEER}", file=sys.stderr)
        return 1

    device = loop.resolve_device(args.device).type
    steps = args.steps or (30 if args.quick else None)
    test_images = args.test_images or (500 if args.quick else 0)
    overrides = [f"data.path={data}", f"train.device={device}", "train.picture_every=0", *args.overrides]
    overrides += [f"train.max_steps={steps}"] if steps else []
    recipe = load_recipe(RECIPE, overrides)
    steps, bottleneck = recipe.train.max_steps, recipe.bottleneck.args
    codebook_size = bottleneck.get("codebook_size", 512)

    results = {}
    with tempfile.TemporaryDirectory(prefix="vqt-quality-") as tmp:
        for name, peer in (("vqtoolkit", False), (PEER, True)):
            print(f"training {name}: {steps} steps on {device}", file=sys.stderr, flush=True)
            results[name] = run(load_recipe(RECIPE, overrides), Path(tmp) / name, peer, test_images)
    ours, theirs = results["vqtoolkit"], results[PEER]

    rows = [
        ("PSNR (dB)", "psnr", "{:.2f}"),
        ("SSIM", "ssim", "{:.4f}"),
        (f"codes used (of {codebook_size})", "codebook_used_fraction", "{:.1%}"),
        ("code perplexity", "codebook_perplexity", "{:.1f}"),
        ("final train loss", "final_train_loss", "{:.4f}"),
        ("train wall time (s)", "train_seconds", "{:.1f}"),
        ("train CPU time (s)", "train_cpu_seconds", "{:.1f}"),
        ("eval wall time (s)", "eval_seconds", "{:.1f}"),
    ]
    print(f"\n{'':26} {'vqtoolkit':>12} {PEER:>24}")
    for label, key, fmt in rows:
        print(f"{label:26} {fmt.format(ours[key]):>12} {fmt.format(theirs[key]):>24}")
    examples = ours["examples"]
    psnr_ok = ours["psnr"] >= theirs["psnr"]
    usage_ok = ours["codebook_used_fraction"] >= 0.95
    print(
        f"\ntest images {examples}, threads {torch.get_num_threads()}; goals: PSNR >= peer "
        f"{'met' if psnr_ok else 'MISSED'}, codes used >= 95% {'met' if usage_ok else 'MISSED'}"
    )
    data_name = "full Fashion-MNIST" if examples == 10000 else f"Fashion-MNIST, {examples} test images"
    print(
        f"image VQ-VAE quality: PSNR {ours['psnr']:.1f} dB vs {theirs['psnr']:.1f} dB ({PEER}), "
        f"codes used {ours['codebook_used_fraction']:.0%} vs {theirs['codebook_used_fraction']:.0%} "
        f"(K={codebook_size}, {steps} steps, {data_name}, {device})"
    )
    if args.json:
        report = {
            "benchmark": "image_quality",
            "recipe": str(RECIPE.relative_to(ROOT)),
            "overrides": overrides,
            "steps": steps,
            "batch_size": recipe.train.batch_size,
            "codebook_size": codebook_size,
            "latent_dim": recipe.model.latent_dim,
            "decay": bottleneck.get("decay"),
            "beta": bottleneck.get("beta"),
            "test_images": examples,
            "goals": {"psnr_at_least_peer": psnr_ok, "codes_used_at_least_95pct": usage_ok},
            "results": results,
            "machine": machine(device),
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
