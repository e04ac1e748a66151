"""What every bottleneck returns, so the model and trainer treat VQ, Gaussian and plain alike."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class BottleneckOutput:
    z: Tensor  # what the decoder sees, same shape as the encoder output (B, C, *grid)
    loss: Tensor  # scalar auxiliary loss: VQ + commitment, or KL; zero for the plain autoencoder
    codes: Tensor | None = None  # integer codes (B, *grid) or (B, Q, *grid) for residual VQ
    stats: dict[str, Tensor] = field(default_factory=dict)  # detached scalars for logs


class Bottleneck(torch.nn.Module):
    """Base class. `discrete` bottlenecks also implement encode (latents -> codes) and decode."""

    discrete: bool = False
    # residual (multi-stage) codes: the codes of the first N stages decode on their own, so
    # `vqt tokenize --codebooks N` can keep only those
    residual: bool = False

    def encode(self, z: Tensor) -> Tensor:
        raise TypeError(f"the {type(self).__name__} bottleneck is continuous and has no codes")

    def decode(self, codes: Tensor) -> Tensor:
        raise TypeError(f"the {type(self).__name__} bottleneck is continuous and has no codes")

    def codebook_sizes(self) -> list[int]:
        return []

    def fit_to_run(self, steps: int) -> dict[str, float]:
        """Told, before training, how many steps a run whose length is fixed in advance (a cosine
        schedule) will take: a bottleneck that averages statistics over steps may shorten its averages
        for a short run. Returns the settings it changed, by name and new value (the run's report shows
        them beside the recipe's); nothing by default."""
        return {}
