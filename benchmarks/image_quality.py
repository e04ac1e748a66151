"""Reconstruction quality of each quantizer in the image VQ-VAE recipe on the full Fashion-MNIST, side by
side with vector-quantize-pytorch's implementation of the same method: the same encoder/decoder, K, steps,
batches and seed, the peer with its own equivalent features on (k-means init and EMA dead-code expiry for
VQ and residual VQ).

| method | ours | the peer's |
| --- | --- | --- |
| vq | `vq`, K = 512, k-means init, dead codes by EMA share | `VectorQuantize`, kmeans_init, |
|    |                                                      | threshold_ema_dead_code=2 |
| rvq | `rvq`, 2 x 512 | `ResidualVQ`, the same options |
| fsq | `fsq`, levels 8, 8, 8 (512 codes) | `FSQ`, the same levels |
| lfq | `lfq`, 9 bits (512 codes), entropy weight 0.1 | `LFQ`, the same weights |

Both models of a method go through vqtoolkit's Trainer (same loop, optimizer, schedule and data order) in
this one process, one after the other, with the same thread count; both are evaluated by the same
`evaluate` on the test split: PSNR, SSIM, fraction of the codes used and code perplexity.

    python benchmarks/image_quality.py                       # every method, the recipe's budget
    python benchmarks/image_quality.py --methods vq,fsq --steps 300 --test-images 2000
    python benchmarks/image_quality.py --quick --json quality.json

Extra arguments are recipe overrides, applied to every model.
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
RESTARTS = ["bottleneck.kmeans_init=true", "bottleneck.dead_code_threshold=0.5", "bottleneck.usage_decay=0.8"]
METHODS = {
    "vq": [],
    "rvq": ["bottleneck.name=rvq", "bottleneck.num_quantizers=2", "bottleneck.codebook_size=512", *RESTARTS],
    "fsq": ["bottleneck.name=fsq", "bottleneck.levels=[8,8,8]"],
    "lfq": ["bottleneck.name=lfq", "bottleneck.bits=9"],
}


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
    losses = [r["loss"] for r in records if r["split"] == "train"]
    return losses[-1] if losses else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}"
    )
    parser.add_argument("--quick", action="store_true", help="30 steps, 500 test images")
    parser.add_argument("--steps", type=int, help="training steps (default: the recipe's train.max_steps)")
    parser.add_argument("--test-images", type=int, help="evaluate on the first N test images (default: all)")
    parser.add_argument("--data", default=str(FASHION_MNIST), help="IDX folder of the full Fashion-MNIST")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--json", type=Path, help="write all results to this JSON file")
    parser.add_argument("overrides", nargs="*", help="recipe overrides for every model, e.g. optim.lr=2e-3")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    if unknown := set(methods) - set(METHODS):
        print(
            f"error: --methods: unknown {sorted(unknown)}; choose from {', '.join(METHODS)}", file=sys.stderr
        )
        return 2

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
    common = [f"data.path={data}", f"train.device={device}", "train.picture_every=0", *args.overrides]
    common += [f"train.max_steps={steps}"] if steps else []
    results, rows = {}, []
    with tempfile.TemporaryDirectory(prefix="vqt-quality-") as tmp:
        for method in methods:
            overrides = [*METHODS[method], *common]
            recipe = load_recipe(RECIPE, overrides)
            for side, peer in (("vqtoolkit", False), (PEER, True)):
                print(
                    f"training {method} ({side}): {recipe.train.max_steps} steps on {device}", file=sys.stderr
                )
                result = run(
                    load_recipe(RECIPE, overrides), Path(tmp) / f"{method}-{side}", peer, test_images
                )
                results[f"{method} {side}"] = result
                rows.append((method, side, result))
                print(f"{method} {side}: PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f}, codes used "
                      f"{result['codebook_used_fraction']:.1%}", file=sys.stderr, flush=True)  # fmt: skip
    print("| method | implementation | PSNR dB | SSIM | codes used | perplexity | train s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for method, side, r in rows:
        used, perplexity = r["codebook_used_fraction"], r["codebook_perplexity"]
        print(f"| {method} | {side} | {r['psnr']:.2f} | {r['ssim']:.4f} | {used:.1%} | {perplexity:.1f} | "
              f"{r['train_seconds']:.0f} |")  # fmt: skip
    examples = rows[0][2]["examples"]
    print(f"\n{examples} test images, {rows[0][2].get('threads', torch.get_num_threads())} threads, {device}")
    for method in methods:
        ours, theirs = results[f"{method} vqtoolkit"], results[f"{method} {PEER}"]
        verdict = "at least the peer's" if ours["psnr"] >= theirs["psnr"] else "BELOW the peer's"
        print(f"image quality {method}: PSNR {ours['psnr']:.2f} dB vs {theirs['psnr']:.2f} dB ({PEER}), "
              f"codes used {ours['codebook_used_fraction']:.0%} vs {theirs['codebook_used_fraction']:.0%}: "
              f"{verdict}")  # fmt: skip
    if args.json:
        report = {"benchmark": "image_quality", "recipe": str(RECIPE.relative_to(ROOT)), "common": common,
                  "methods": {m: METHODS[m] for m in methods}, "test_images": examples, "results": results,
                  "machine": machine(device)}  # fmt: skip
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
