"""Media from a prior: sample code grids, decode them with the tokenizer, write media files."""

from __future__ import annotations

from pathlib import Path

import torch

from vqtoolkit.errors import VQTError
from vqtoolkit.inference.tokenizer import Tokenizer
from vqtoolkit.nn.pixelcnn_sampling import sample
from vqtoolkit.progress import progress
from vqtoolkit.rundir import load_prior

SAMPLE_BATCH = 64


def sample_media(tokenizer: Tokenizer, prior_dir: str | Path, count: int, out_dir: Path, temperature: float,
                 seed: int, cached: bool = True) -> list[Path]:  # fmt: skip
    """Draw `count` code grids from the prior, decode them with the VQ-VAE and write media files."""
    prior, _, grid, tokenizer_hash = load_prior(prior_dir, str(tokenizer.device))
    if tokenizer_hash != tokenizer.model_hash:
        raise VQTError(
            f"{prior_dir}: this prior was trained on the codes of another model (hash {tokenizer_hash}, "
            f"{tokenizer.run_dir} has {tokenizer.model_hash})"
        )
    generator = torch.Generator(device=tokenizer.device).manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    modality = tokenizer.modality
    suffix = modality.output_suffix
    meta = tokenizer.options(modality.stream or modality.read)  # e.g. the sample rate the model works at
    paths = []
    batches = range(0, count, SAMPLE_BATCH)  # drawn, decoded and written a batch at a time: flat memory
    for start in progress(batches, desc="sample", unit="batch", disable=len(batches) == 1):
        shape = (min(SAMPLE_BATCH, count - start), *grid)
        codes = sample(prior, shape, temperature, generator=generator, cached=cached)
        media = tokenizer.model.decode(codes).float().clamp(*tokenizer.modality.value_range).cpu()
        for index, item in enumerate(media, start):
            path = out_dir / f"sample_{index:03d}{suffix}"
            modality.write(path, item, meta)
            paths.append(path)
        if start == 0 and modality.overview:  # the first batch's samples in one picture
            modality.overview(media, out_dir / "grid.png")
    return paths
