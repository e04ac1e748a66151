"""Bits per code and bits per dimension of the image PixelCNN prior on the Fashion-MNIST test set.

Trains the image VQ-VAE recipe and then the image prior recipe on the full Fashion-MNIST (the Debian
package dataset-fashion-mnist), exactly as a user would through `vqt train`, and evaluates the prior
on the 10,000 test images: its NLL in bits per code and the VQ-VAE paper's bound in bits per dimension.
A uniform prior over K codes (log2 K bits per code) is printed beside it as the floor to beat.

    python benchmarks/image_prior.py                     # the recipes' budgets
    python benchmarks/image_prior.py --quick --json prior.json
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def vqt(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "vqtoolkit", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"vqt {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 VQ-VAE steps, 100 prior steps")
    parser.add_argument("--data", type=Path, default=FASHION_MNIST)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not (args.data / "t10k-images-idx3-ubyte.gz").is_file():
        print(
            f"error: no Fashion-MNIST at {args.data}; apt-get install -y dataset-fashion-mnist",
            file=sys.stderr,
        )
        return 1
    quick = ["train.max_steps=100"] if args.quick else []
    with tempfile.TemporaryDirectory(prefix="vqt-prior-") as tmp:
        vq, prior = Path(tmp) / "image_vqvae", Path(tmp) / "image_prior"
        vq_results = vqt("train", "recipes/image_vqvae.yaml", f"data.path={args.data}", f"train.out_dir={vq}",
                         "train.picture_every=0", *quick)  # fmt: skip
        results = vqt(
            "train", "recipes/image_prior.yaml", f"tokenizer={vq}", f"train.out_dir={prior}", *quick
        )
    codebook = 512
    print(f"VQ-VAE: PSNR {vq_results['psnr']:.2f} dB, codes used {vq_results['codebook_used_fraction']:.0%}")
    for key in ("bits_per_code", "prior_bits_per_dim", "recon_bits_per_dim", "bits_per_dim"):
        print(f"{key:22}{results[key]:10.4f}")
    print(
        f"image prior: {results['bits_per_code']:.3f} bits per code (uniform: {math.log2(codebook):.0f}), "
        f"bound {results['bits_per_dim']:.3f} bits/dim on {results['examples']} Fashion-MNIST test images"
    )
    if args.json:
        args.json.write_text(json.dumps({"vqvae": vq_results, "prior": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
