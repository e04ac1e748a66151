"""Regenerate fashion_mnist_small/ from the Debian `dataset-fashion-mnist` package.

    apt-get install -y dataset-fashion-mnist
    python plugins/vqt_image/data/make_subset.py [--source DIR] [--train 4000] [--test 1000]

Each output is a valid gzip'd IDX file holding the first N items of the original, with the count in
its header set to N. The gzip header carries no timestamp, so reruns give identical bytes.
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

SOURCE = Path("/usr/share/datasets/fashion-mnist")
TARGET = Path(__file__).resolve().parent / "fashion_mnist_small"


def take_first(source: Path, target: Path, count: int) -> None:
    """Copy the first `count` items of a gzip'd IDX file (magic, dims, then uint8 data)."""
    data = gzip.decompress(source.read_bytes())
    magic, total = struct.unpack(">II", data[:8])
    rank = magic & 0xFF
    dims = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    if magic >> 8 != 0x08 or count > total:
        raise SystemExit(f"{source}: not a uint8 IDX file with at least {count} items")
    item_size = 1
    for dim in dims[1:]:
        item_size *= dim
    header = struct.pack(f">I{rank}I", magic, count, *dims[1:])
    body = data[4 + 4 * rank : 4 + 4 * rank + count * item_size]
    with open(target, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as out:
        out.write(header + body)
    print(f"{target.name}: {count} of {total} items, {target.stat().st_size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=1000)
    args = parser.parse_args()
    TARGET.mkdir(exist_ok=True)
    for split, count in (("train", args.train), ("t10k", args.test)):
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{split}-{kind}-ubyte.gz"
            take_first(args.source / name, TARGET / name, count)


if __name__ == "__main__":
    main()
