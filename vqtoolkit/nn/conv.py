"""The VQ-VAE paper's convolutional encoder/decoder, for 1D, 2D and 3D media alike.

Each stride-2 layer halves every axis that still needs downsampling (kernel 4 there, kernel 3
elsewhere), so `downsample=[4, 4]` is the paper's image model and `[4, 4, 4]` VideoGPT's.
"""

from __future__ import annotations

import math
from typing import Annotated

from torch import Tensor, nn

from vqtoolkit.ranges import COUNT, WIDTH, Range

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _stride_plan(downsample: list[int]) -> list[tuple[int, ...]]:
    """Per layer, the stride of each axis: 2 while that axis still needs halving, else 1."""
    for factor in downsample:
        if factor < 1 or factor & (factor - 1):
            raise ValueError(f"downsample factors must be powers of two, got {list(downsample)}")
    steps = [int(math.log2(f)) for f in downsample]
    return [tuple(2 if layer < s else 1 for s in steps) for layer in range(max(steps, default=0))]


class ResidualBlock(nn.Module):
    """ReLU, 3x3 conv, ReLU, 1x1 conv, added to the input (the paper's residual block)."""

    def __init__(self, rank: int, channels: int, hidden: int):
        super().__init__()
        conv = CONV[rank]
        self.body = nn.Sequential(
            nn.ReLU(), conv(channels, hidden, 3, padding=1), nn.ReLU(), conv(hidden, channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ConvEncoder(nn.Module):
    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        downsample: list[Annotated[int, Range(1, 1024)]] = (
            4,
            4,
        ),  # factor per axis, powers of two; its length is the media rank
        hidden: Annotated[int, WIDTH] = 256,  # channels of every hidden layer (256 in the paper)
        res_blocks: Annotated[int, COUNT] = 2,  # residual blocks after the strided convolutions
        res_hidden: Annotated[
            int, Range(0, 2**20)
        ] = 0,  # hidden channels inside residual blocks; 0 = same as `hidden`
    ):
        super().__init__()
        rank, conv = len(downsample), CONV[len(downsample)]
        self.downsample = tuple(downsample)
        layers, channels = [], in_channels
        for strides in _stride_plan(list(downsample)):
            kernel = tuple(4 if s == 2 else 3 for s in strides)
            layers += [conv(channels, hidden, kernel, stride=strides, padding=1), nn.ReLU()]
            channels = hidden
        layers.append(conv(channels, hidden, 3, padding=1))
        layers += [ResidualBlock(rank, hidden, res_hidden or hidden) for _ in range(res_blocks)]
        layers += [nn.ReLU(), conv(hidden, latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    def __init__(
        self,
        out_channels: int,
        latent_dim: int,
        downsample: list[Annotated[int, Range(1, 1024)]] = (4, 4),  # must match the encoder's
        hidden: Annotated[int, WIDTH] = 256,
        res_blocks: Annotated[int, COUNT] = 2,  # residual blocks after the strided convolutions
        res_hidden: Annotated[int, Range(0, 2**20)] = 0,
    ):
        super().__init__()
        rank, conv, conv_t = len(downsample), CONV[len(downsample)], CONV_T[len(downsample)]
        self.downsample = tuple(downsample)
        layers = [conv(latent_dim, hidden, 3, padding=1)]
        layers += [ResidualBlock(rank, hidden, res_hidden or hidden) for _ in range(res_blocks)]
        layers.append(nn.ReLU())
        plan = _stride_plan(list(downsample))[::-1]
        for i, strides in enumerate(plan):
            kernel = tuple(4 if s == 2 else 3 for s in strides)
            last = i == len(plan) - 1
            layers.append(conv_t(hidden, out_channels if last else hidden, kernel, stride=strides, padding=1))
            if not last:
                layers.append(nn.ReLU())
        if not plan:
            layers.append(conv(hidden, out_channels, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
