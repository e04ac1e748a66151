"""PixelCNN sampling: the cached sampler (each layer's state kept, only what a new position needs is
computed) against the naive one (the whole model on the whole grid for every position), same model.

    python benchmarks/prior_sampling.py            # 32x32 codes, batch 16, hidden 64, 8 layers, K=512
    python benchmarks/prior_sampling.py --quick --json sampling.json

Both samplers first draw a whole 8x8 grid from the same seed, and must draw identical codes. On the
32x32 grid the naive sampler is timed over its first `--naive-positions` positions and extrapolated:
every naive position costs the same full forward pass, so the extrapolation is exact up to noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from peers import machine

from vqtoolkit.nn.pixelcnn import PixelCNN
from vqtoolkit.nn.pixelcnn_sampling import _draw, sample


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16x16 grid, 1 repeat")
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--naive-positions", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    side, repeats = (16, 1) if args.quick else (args.side, args.repeats)
    torch.manual_seed(0)
    model = PixelCNN(codebook_size=512, rank=2, hidden=64, layers=8, kernel=3).eval()

    check = {cached: sample(model, (4, 8, 8), generator=torch.Generator().manual_seed(1), cached=cached)
             for cached in (True, False)}  # fmt: skip
    identical = torch.equal(check[True], check[False])

    codes = torch.zeros(args.batch, side, side, dtype=torch.long)
    threads = torch.get_num_threads()
    cached_times, naive_times = [], {1: [], threads: []}
    for _ in range(repeats):  # interleaved: cached, naive, cached, naive ...
        start = time.perf_counter()
        sample(model, (args.batch, side, side), generator=torch.Generator().manual_seed(0))
        cached_times.append(time.perf_counter() - start)
        for count in naive_times:  # the naive sampler with one thread and with all: the faster counts
            torch.set_num_threads(count)
            start = time.perf_counter()
            with torch.no_grad():
                for _ in range(args.naive_positions):
                    _draw(model(codes)[:, :, 0, 0], 1.0, None)
            naive_times[count].append((time.perf_counter() - start) / args.naive_positions * side * side)
        torch.set_num_threads(threads)
    naive_by_threads = {count: statistics.median(times) for count, times in naive_times.items()}
    cached, naive = statistics.median(cached_times), min(naive_by_threads.values())
    print(f"cached sampler  {cached:8.2f} s for the whole {side}x{side} grid, batch {args.batch}")
    for count, seconds in naive_by_threads.items():
        print(
            f"naive sampler   {seconds:8.2f} s with {count} thread(s), from {args.naive_positions} positions"
        )
    print(f"identical samples on an 8x8 check grid: {identical}")
    print(
        f"prior sampling: cached {naive / cached:.0f}x faster than naive ({side}x{side} codes, batch "
        f"{args.batch}, K=512, hidden 64, 8 layers, the naive sampler's faster thread count, cpu)"
    )
    if args.json:
        results = {"cached_seconds": cached, "naive_seconds": naive, "speedup": naive / cached}
        results |= {"identical": identical, "side": side, "batch": args.batch, "machine": machine("cpu")}
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
