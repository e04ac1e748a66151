"""Side-by-side pictures of originals and reconstructions, written as PNG without matplotlib."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image


def save_reconstructions(originals: torch.Tensor, reconstructions: torch.Tensor, path: Path) -> None:
    """Images (B, C, H, W): the originals in the top row, their reconstructions below (small images are
    enlarged so that people can see them)."""
    if originals.shape[1] not in (1, 3):
        raise ValueError(f"cannot draw {originals.shape[1]}-channel media")
    if originals.shape[-2] < 64:  # 28 px Fashion-MNIST
        scale = -(-64 // originals.shape[-2])
        originals, reconstructions = (
            v.repeat_interleave(scale, -2).repeat_interleave(scale, -1) for v in (originals, reconstructions)
        )
    count = min(len(originals), 8)
    save_grid(torch.cat([originals[:count], reconstructions[:count]]), path, columns=count)


def save_frame_reconstructions(originals: torch.Tensor, reconstructions: torch.Tensor, path: Path) -> None:
    """Clips (B, C, T, H, W): the first clip's frames above their reconstructions."""
    first = (rearrange(v[0], "c t h w -> t c h w") for v in (originals, reconstructions))
    save_reconstructions(*first, path)


def save_waveform_reconstructions(originals: torch.Tensor, reconstructions: torch.Tensor, path: Path) -> None:
    """Audio (B, 1, T): waveform envelopes of the originals above those of their reconstructions."""
    save_reconstructions(waveform_image(originals), waveform_image(reconstructions), path)


def save_grid(images: torch.Tensor, path: Path, columns: int = 8) -> None:
    """Images (N, C, H, W) in [0, 1] as one picture, `columns` wide, with white lines between them."""
    rows = -(-len(images) // columns)
    blank = images.new_ones(rows * columns - len(images), *images.shape[1:])
    pictures = F.pad(torch.cat([images, blank]).clamp(0, 1).expand(-1, 3, -1, -1), (2, 0, 2, 0), value=1.0)
    grid = F.pad(rearrange(pictures, "(r n) c h w -> c (r h) (n w)", n=columns), (0, 2, 0, 2), value=1.0)
    pixels = rearrange((grid * 255).round().to(torch.uint8), "c h w -> h w c")
    Image.fromarray(pixels.numpy()).save(path)


def waveform_image(audio: torch.Tensor, height: int = 64, width: int = 256) -> torch.Tensor:
    """(B,1,T) in [-1,1] -> (B,1,height,width) grey pictures: the min..max envelope per column."""
    width = min(width, audio.shape[-1])
    columns = rearrange(audio[:, 0, : audio.shape[-1] // width * width], "b (w s) -> b w s", w=width)
    top = ((1 - columns.amax(-1).clamp(-1, 1)) / 2 * (height - 1)).round().long()
    bottom = ((1 - columns.amin(-1).clamp(-1, 1)) / 2 * (height - 1)).round().long()
    rows = torch.arange(height).view(1, height, 1)
    inside = (rows >= top.unsqueeze(1)) & (rows <= bottom.unsqueeze(1))
    return rearrange(1.0 - inside.float(), "b h w -> b 1 h w")
