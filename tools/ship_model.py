"""Make a shipped default model from a trained run: the run's config.yaml and its weights (or one of its
snapshots'), without the buffers that only steer training (dead-code restart pools and usage averages,
which a loaded model rebuilds as fresh). Float tensors are stored in fp16; with --int8 PREFIX, the large
weight matrices (at least 65,536 values) whose names start with PREFIX (e.g. `encoder.`, whose small
errors the quantizer absorbs) as 8-bit integers with an fp16 scale per row, which `vqt` loads back as fp32:
for a model that must fit a size cap. A shipped model loads into fp32 like any run.

    python tools/ship_model.py runs/speech_vqvae plugins/vqt_speech/models/speech
    python tools/ship_model.py runs/speech_vqvae plugins/vqt_speech/models/speech --int8 encoder.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from vqtoolkit.config import load_recipe
from vqtoolkit.model import build_model
from vqtoolkit.rundir import (
    CONFIG_FILE,
    MODEL_FILE,
    int8_rows,
    optional_state,
    read_safetensors,
    save_tensors,
)

LARGE = 2**16  # values: the weights --int8 stores as integers


def ship(run_dir: Path, out_dir: Path, snapshot: int | None, int8: tuple[str, ...] = (),
         large: int = LARGE) -> Path:  # fmt: skip
    weights_path = run_dir / (f"snapshots/model_{snapshot:07d}.safetensors" if snapshot else MODEL_FILE)
    weights, metadata = read_safetensors(weights_path)
    with torch.device("meta"):
        dropped = optional_state(build_model(load_recipe(run_dir / CONFIG_FILE)))
    kept = {}
    for name, tensor in weights.items():
        if name in dropped:
            continue
        matrix = tensor.is_floating_point() and tensor.ndim >= 2 and tensor.numel() >= large
        if matrix and name.startswith(int8):
            kept |= {name + suffix: part for suffix, part in int8_rows(tensor).items()}
        else:
            kept[name] = tensor.half() if tensor.is_floating_point() else tensor
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / CONFIG_FILE, out_dir / CONFIG_FILE)
    save_tensors(out_dir / MODEL_FILE, kept, metadata)
    return out_dir / MODEL_FILE


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--snapshot", type=int, help="ship the weights of this snapshot step")
    parser.add_argument(
        "--int8", action="append", default=[], metavar="PREFIX", help="int8 for large weights named PREFIX..."
    )
    parser.add_argument("--int8-min", type=int, default=LARGE, help="values a weight needs for --int8")
    args = parser.parse_args()
    path = ship(args.run_dir, args.out_dir, args.snapshot, tuple(args.int8), args.int8_min)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB) and {args.out_dir / CONFIG_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
