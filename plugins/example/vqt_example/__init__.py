"""Patch encoder/decoder: space-to-depth plus a per-position MLP, for media of rank 1, 2 or 3."""

import math

from einops import rearrange
from torch import Tensor, nn

from vqtoolkit.hookspecs import hookimpl

AXES = {1: ["t"], 2: ["h", "w"], 3: ["t", "h", "w"]}
CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class _Patches(nn.Module):
    """Shared by both directions: the einops patterns and a 1x1-conv MLP."""

    def __init__(self, patch: list[int], channels_in: int, channels_out: int, hidden: int):
        super().__init__()
        axes = AXES[len(patch)]
        self.downsample = tuple(patch)
        self.media = "b c " + " ".join(f"({a} p{a})" for a in axes)
        self.patches = f"b (c {' '.join(f'p{a}' for a in axes)}) {' '.join(axes)}"
        self.sizes = {f"p{a}": p for a, p in zip(axes, patch)}
        conv = CONV[len(patch)]
        self.mlp = nn.Sequential(conv(channels_in, hidden, 1), nn.GELU(), conv(hidden, channels_out, 1))


class PatchEncoder(_Patches):
    def __init__(self, in_channels: int, latent_dim: int, patch: list[int] = (4, 4), hidden: int = 128):
        super().__init__(patch, in_channels * math.prod(patch), latent_dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(rearrange(x, f"{self.media} -> {self.patches}", **self.sizes))


class PatchDecoder(_Patches):
    def __init__(self, out_channels: int, latent_dim: int, patch: list[int] = (4, 4), hidden: int = 128):
        super().__init__(patch, latent_dim, out_channels * math.prod(patch), hidden)

    def forward(self, z: Tensor) -> Tensor:
        return rearrange(self.mlp(z), f"{self.patches} -> {self.media}", **self.sizes)


@hookimpl
def register_encoders(register):
    register("patch", PatchEncoder)


@hookimpl
def register_decoders(register):
    register("patch", PatchDecoder)
