"""Video tokenizer speed and quality: frames per second for PyAV decoding alone, the model's forward
pass alone and `vqt tokenize` end to end (which overlaps the two), interleaved and repeated; and the
reconstruction PSNR/SSIM of the trained model on the held-out end of each sample clip.

    python benchmarks/video.py                       # train the recipe's budget, then measure
    python benchmarks/video.py --model runs/video     # measure an existing run
    python benchmarks/video.py --quick --json video.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from peers import machine
from vqt_video.io import stream_video

from vqtoolkit.config import load_recipe
from vqtoolkit.inference.stream import encode_stream, pad_to_multiple
from vqtoolkit.inference.tokenizer import Tokenizer
from vqtoolkit.rundir import resolve_device
from vqtoolkit.train.loop import Trainer

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "video_vqvae.yaml"
CLIP = ROOT / "plugins" / "vqt_video" / "data" / "bigbuckbunny" / "bigbuckbunny_128.mp4"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speeds(tokenizer: Tokenizer, clip: Path, repeats: int) -> dict:
    options = tokenizer.options(tokenizer.modality.stream)
    chunk = 16
    pieces = list(stream_video(clip, chunk=chunk, **options))
    frames = sum(p.shape[1] for p in pieces)
    ds, context = tokenizer.model.downsample, tokenizer.context[0]

    def encode(batch):
        return tokenizer.model.encode(pad_to_multiple(batch, (1, *ds[1:])))

    runs = {
        "decode": lambda: sum(1 for _ in stream_video(clip, chunk=chunk, **options)),
        "forward": lambda: encode_stream(encode, pieces, ds[0], chunk, context, tokenizer.device),
        "tokenize": lambda: tokenizer.encode_file(clip, chunk=chunk),
    }
    times = {name: [] for name in runs}
    for run in runs.values():  # warm-up
        run()
    for _ in range(repeats):  # interleaved: A B C A B C ...
        for name, run in runs.items():
            times[name].append(timed(run))
    fps = {name: frames / statistics.median(values) for name, values in times.items()}
    fps["overlap_bound"] = min(fps["decode"], fps["forward"])  # max(decode, forward) time, as fps
    fps["serial_bound"] = frames / (frames / fps["decode"] + frames / fps["forward"])
    return {"frames": frames, "fps": fps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="an existing video run (default: train recipes/video_vqvae.yaml)")
    parser.add_argument("--quick", action="store_true", help="train 20 steps, 2 timing repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--json", type=Path, help="write all results to this JSON file")
    parser.add_argument("overrides", nargs="*", help="recipe overrides when training")
    args = parser.parse_args(argv)
    device = resolve_device(args.device).type
    repeats = 2 if args.quick else args.repeats
    with tempfile.TemporaryDirectory(prefix="vqt-video-") as tmp:
        quality, run_dir = {}, args.model
        if not run_dir:
            overrides = [f"train.device={device}", "train.picture_every=0", *args.overrides]
            overrides += ["train.max_steps=20"] if args.quick else []
            trainer = Trainer(load_recipe(RECIPE, overrides), run_dir=Path(tmp) / "run")
            start = time.perf_counter()
            quality = trainer.fit()
            quality["train_seconds"] = time.perf_counter() - start
            run_dir = trainer.run_dir
        tokenizer = Tokenizer.load(run_dir, device)
        results = {**speeds(tokenizer, CLIP, repeats), "quality": quality}
    fps = results["fps"]
    print(f"{'frames per second':34}{'':>8}")
    for name in ("decode", "forward", "tokenize", "overlap_bound", "serial_bound"):
        print(f"{name:34}{fps[name]:8.1f}")
    if quality:
        print(f"{'held-out PSNR (dB) / SSIM':34}{quality['psnr']:8.2f} / {quality['ssim']:.3f}")
    efficiency = fps["tokenize"] / fps["overlap_bound"]
    print(
        f"video tokenize: {fps['tokenize']:.1f} fps end to end vs decode alone {fps['decode']:.1f}, forward "
        f"alone {fps['forward']:.1f} ({efficiency:.0%} of the max(decode, forward) bound; "
        f"{results['frames']} frames of {CLIP.name}, {torch.get_num_threads()} threads, {device})"
    )
    if args.json:
        args.json.write_text(json.dumps({**results, "machine": machine(device)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
