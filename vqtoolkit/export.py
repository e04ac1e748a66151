"""`vqt export`: a run's encoder (media -> codes) and decoder (codes -> media) as standalone programs.

Each is written with `torch.export` (a .pt2 file) with dynamic batch and grid axes where the model allows,
else at the recipe's example size; when `torch.export` cannot capture a model at all, TorchScript
(`torch.jit.trace`, a .ts file) is the fallback. The toolkit itself never loads these files: loading a .pt2
file (`torch.export.load`) or a TorchScript file can run pickle, so load only exports you made or trust.

The programs compute what the toolkit does, without its file handling: the encoder takes media
(B, C, *grid) in the modality's value range, each grid axis a multiple of the downsampling (pad it as the
toolkit does, repeating the last row/column/sample), and returns integer codes (B, *latent_grid), or
(B, Q, *latent_grid) for residual VQ; the decoder takes codes and returns media (B, C, *grid) clamped to
the value range.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn

from vqtoolkit.errors import VQTError
from vqtoolkit.model import Autoencoder
from vqtoolkit.nn.quantize import ResidualVQ, VectorQuantizer, codebook_rows

MAX_STEPS = 1 << 20  # the longest latent grid axis a dynamic export accepts (70 minutes of 16 kHz speech)


class MediaToCodes(nn.Module):
    """Encoder + nearest-code lookup: media (B, C, *grid) -> codes (B, *latent_grid) or (B, Q, ...).

    Each quantizer's own lookup space (its projection and l2 normalisation, for factorized codes) and its
    own decode (for the residual) are used as they are; only the search is written out, as one product
    with the codebook's [-2 e, ||e||^2] rows."""

    def __init__(self, model: Autoencoder):
        super().__init__()
        self.encoder = model.encoder
        self.residual = isinstance(model.bottleneck, ResidualVQ)
        self.quantizers = nn.ModuleList(model.bottleneck.layers if self.residual else [model.bottleneck])
        for index, layer in enumerate(self.quantizers):
            self.register_buffer(f"rows_{index}", codebook_rows(layer._codebook().detach()).contiguous())

    def forward(self, media: Tensor) -> Tensor:
        residual, codes = self.encoder(media).float(), []
        for index, layer in enumerate(self.quantizers):
            lookup = rearrange(layer._lookup_space(residual), "b d ... -> b ... d")
            rows = torch.cat([lookup, torch.ones_like(lookup[..., :1])], dim=-1)
            level = torch.matmul(rows, getattr(self, f"rows_{index}")).min(dim=-1).indices
            codes.append(level)
            if self.residual:
                residual = residual - layer.decode(level)
        return torch.stack(codes, dim=1) if self.residual else codes[0]


class CodesToMedia(nn.Module):
    """Code lookup + decoder: codes -> media (B, C, *grid), clamped to the modality's value range."""

    def __init__(self, model: Autoencoder, value_range: tuple[float, float]):
        super().__init__()
        self.bottleneck, self.decoder, self.recon_loss = model.bottleneck, model.decoder, model.recon_loss
        self.low, self.high = value_range

    def forward(self, codes: Tensor) -> Tensor:
        return self.recon_loss.to_media(self.decoder(self.bottleneck.decode(codes))).clamp(
            self.low, self.high
        )


@dataclass
class Exported:
    path: Path
    method: str  # "torch.export" or "torchscript"
    dynamic: bool  # batch and grid axes free (else fixed at example_shape)
    example_shape: list[int]
    notes: list[str] = field(default_factory=list)


def example_grid(recipe, modality, downsample: tuple[int, ...]) -> list[int]:
    """The grid of one training example (the modality's `example_grid`, else the first held-out example's),
    rounded up to a multiple of the downsampling."""
    if modality.example_grid:
        grid = [int(size) for size in modality.example_grid(dict(recipe.data.options))]
    else:
        from vqtoolkit.train.data import make_dataset

        grid = list(make_dataset(recipe, modality, "test")[0].shape[1:])
    if len(grid) != len(downsample):
        raise VQTError(f"{modality.name}: example_grid gave {grid}, not a grid of rank {len(downsample)}")
    return [-(-size // factor) * factor for size, factor in zip(grid, downsample)]


def _dynamic_shapes(rank: int, downsample: tuple[int, ...], levels: bool):
    """Batch and grid axes free: media axes are multiples of the downsampling of the codes' axes."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    steps = [torch.export.Dim(f"steps_{axis}", min=1, max=MAX_STEPS) for axis in range(rank)]
    media = {0: batch, **{2 + axis: factor * steps[axis] for axis, factor in enumerate(downsample)}}
    first = 2 if levels else 1
    codes = {0: batch, **{first + axis: steps[axis] for axis in range(rank)}}
    return media, codes


def export_module(module: nn.Module, example: Tensor, dynamic: dict | None, path: Path) -> Exported:
    """torch.export with `dynamic` axes, then at the example's fixed shape, then TorchScript tracing."""
    notes = []
    module.eval()
    with torch.no_grad():
        for shapes in ([dynamic] if dynamic else []) + [None]:
            try:
                program = torch.export.export(
                    module, (example,), dynamic_shapes=(shapes,) if shapes else None
                )
                torch.export.save(program, path.with_suffix(".pt2"))
                return Exported(
                    path.with_suffix(".pt2"), "torch.export", bool(shapes), list(example.shape), notes
                )
            except Exception as exc:  # export raises many kinds of errors; each one means "try the next way"
                what = "with dynamic shapes" if shapes else "at the example size"
                notes.append(f"torch.export {what} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer warnings
            traced = torch.jit.trace(module, (example,), check_trace=False)
            traced.save(str(path.with_suffix(".ts")))
    return Exported(path.with_suffix(".ts"), "torchscript", False, list(example.shape), notes)


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, dynamic: bool = True) -> dict:
    """Export a run's encoder and decoder to `out_dir` (default RUN_DIR/export); returns what was written,
    also saved as export.json next to the programs."""
    from vqtoolkit.plugins import registry
    from vqtoolkit.rundir import MODEL_FILE, file_hash, is_prior_run, load_model

    run_dir = Path(run_dir)
    if is_prior_run(run_dir):
        raise VQTError(f"{run_dir}: is a prior run; export the VQ-VAE run it models instead")
    model, recipe = load_model(run_dir, "cpu")
    if not isinstance(model.bottleneck, VectorQuantizer | ResidualVQ):
        raise VQTError(f"{run_dir}: only VQ and residual VQ models export (this one has no codebook)")
    modality = registry("modalities").get(recipe.data.modality)
    out_dir = Path(out_dir) if out_dir else run_dir / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    downsample = model.downsample or (1,) * modality.rank
    grid = example_grid(recipe, modality, downsample)
    batch = 2 if dynamic else 1  # an example batch of 1 would make export fix the batch size at 1
    generator = torch.Generator().manual_seed(0)
    media = torch.zeros(batch, recipe.data.channels, *grid).uniform_(
        *modality.value_range, generator=generator
    )
    encoder = MediaToCodes(model)
    with torch.no_grad():
        codes = encoder(media)
    levels = isinstance(model.bottleneck, ResidualVQ)
    media_axes, codes_axes = _dynamic_shapes(modality.rank, downsample, levels)
    results = {
        "encoder": export_module(encoder, media, media_axes if dynamic else None, out_dir / "encoder"),
        "decoder": export_module(
            CodesToMedia(model, modality.value_range),
            codes,
            codes_axes if dynamic else None,
            out_dir / "decoder",
        ),
    }
    description = {
        "run_dir": str(run_dir),
        "model_hash": file_hash(run_dir / MODEL_FILE),
        "modality": modality.name,
        "channels": recipe.data.channels,
        "downsampling": list(downsample),
        "codebook_sizes": model.bottleneck.codebook_sizes(),
        "value_range": list(modality.value_range),
        **{name: {**asdict(e), "path": e.path.name} for name, e in results.items()},
    }
    (out_dir / "export.json").write_text(json.dumps(description, indent=2) + "\n")
    return description
