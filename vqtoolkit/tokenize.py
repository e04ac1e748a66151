"""Media files -> codes files -> media files, with a trained run directory as the model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vqtoolkit.codes import CodesMeta, read_codes, write_codes
from vqtoolkit.config import Recipe
from vqtoolkit.errors import VQTError
from vqtoolkit.modality import Modality
from vqtoolkit.model import Autoencoder
from vqtoolkit.plugins import registry
from vqtoolkit.train.checkpoint import MODEL_FILE, file_hash, load_model


@dataclass
class Tokenizer:
    run_dir: Path
    model: Autoencoder
    recipe: Recipe
    modality: Modality
    model_hash: str
    device: torch.device

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> Tokenizer:
        from vqtoolkit.train.loop import resolve_device

        run_dir, device = Path(run_dir), resolve_device(device)
        model, recipe = load_model(run_dir, device)
        if not model.discrete:
            raise VQTError(f"{run_dir}: the model's bottleneck is continuous and has no codes to tokenize")
        modality = registry("modalities").get(recipe.data.modality)
        return cls(run_dir, model, recipe, modality, file_hash(run_dir / MODEL_FILE), device)

    def media_files(self, paths: list[str]) -> list[Path]:
        """Expand folders into the files this model's modality reads, sorted."""
        files = []
        for path in map(Path, paths):
            if path.is_dir():
                found = sorted(p for p in path.rglob("*") if p.suffix.lower() in self.modality.extensions)
                if not found:
                    raise VQTError(f"{path}: no {self.modality.name} files in this folder")
                files += found
            else:
                files.append(path)
        return files

    @torch.no_grad()
    def encode_file(self, path: Path) -> tuple[torch.Tensor, CodesMeta]:
        if path.suffix.lower() not in self.modality.extensions:
            raise VQTError(
                f"{path}: the {self.modality.name} model in {self.run_dir} cannot read this file "
                f"(it reads {', '.join(self.modality.extensions)})"
            )
        media, media_meta = self.modality.read(path, channels=self.recipe.data.channels)
        grid = list(media.shape[1:])
        batch = pad_to_multiple(media.unsqueeze(0).to(self.device), self.model.downsample)
        codes = self.model.encode(batch)[0].cpu()
        rank = self.modality.rank
        meta = CodesMeta(
            modality=self.modality.name,
            model_hash=self.model_hash,
            latent_grid=list(codes.shape[-rank:]),
            codebook_sizes=self.model.bottleneck.codebook_sizes(),
            original_shape=grid,
            media=media_meta,
        )
        return codes, meta

    def tokenize(self, path: Path, out: Path) -> None:
        codes, meta = self.encode_file(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_codes(out, codes, meta)

    @torch.no_grad()
    def decode_file(self, codes_path: Path, out: Path) -> None:
        codes, meta = read_codes(codes_path)
        self.check(codes_path, meta)
        media = self.model.decode(codes.unsqueeze(0).to(self.device))[0].float().cpu()
        crop = tuple(slice(0, size) for size in meta.original_shape)
        media = media[(slice(None), *crop)].clamp(*self.modality.value_range)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.modality.write(out, media, meta.media)

    def check(self, source: Path, meta: CodesMeta) -> None:
        """Refuse codes made by another model: decoding them would give a silent wrong result."""
        if meta.modality != self.modality.name:
            raise VQTError(
                f"{source}: holds {meta.modality} codes but {self.run_dir} is a {self.modality.name} model"
            )
        if meta.model_hash != self.model_hash:
            raise VQTError(
                f"{source}: was made by another model (model hash {meta.model_hash}, "
                f"{self.run_dir} has {self.model_hash}); decode it with the model that made it"
            )
        if meta.codebook_sizes != self.model.bottleneck.codebook_sizes():
            raise VQTError(f"{source}: codebook sizes {meta.codebook_sizes} do not match {self.run_dir}")


def pad_to_multiple(batch: torch.Tensor, multiple: tuple[int, ...]) -> torch.Tensor:
    """Replicate-pad the trailing grid axes of (B, C, *grid) up to a multiple of each axis's factor."""
    pads = []
    for size, factor in zip(reversed(batch.shape[2:]), reversed(multiple)):
        pads += [0, -size % factor]
    return F.pad(batch, pads, mode="replicate") if any(pads) else batch
