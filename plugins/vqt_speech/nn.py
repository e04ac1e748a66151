"""1D encoder/decoder for waveforms: strided convolutions with dilated residual units.

`strides: [2, 2, 2, 2, 2, 2]` with `dilations: []` is the VQ-VAE paper's 64x speech encoder; the
default `[4, 4, 4]` with dilations 1, 3, 9 follows SoundStream/EnCodec and trains faster on a CPU.
"""

from __future__ import annotations

import math

from torch import Tensor, nn


def _stride_conv(channels_in: int, channels_out: int, stride: int) -> nn.Conv1d:
    # kernel 2s, padding ceil(s/2): exactly T/s outputs for T divisible by s
    return nn.Conv1d(channels_in, channels_out, 2 * stride, stride=stride, padding=math.ceil(stride / 2))


def _stride_conv_transpose(channels_in: int, channels_out: int, stride: int) -> nn.ConvTranspose1d:
    padding = math.ceil(stride / 2)
    return nn.ConvTranspose1d(
        channels_in,
        channels_out,
        2 * stride,
        stride=stride,
        padding=padding,
        output_padding=2 * padding - stride,
    )


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ELU(), nn.Conv1d(channels, channels, 3, dilation=dilation, padding=dilation), nn.ELU(),
            nn.Conv1d(channels, channels, 1),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _widths(stages: int, hidden: int, max_channels: int) -> list[int]:
    return [min(hidden * 2**i, max_channels) for i in range(stages + 1)]


class SpeechEncoder(nn.Module):
    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        strides: list[int] = (4, 4, 4),  # their product is the downsampling (64 = the paper's)
        hidden: int = 32,  # channels of the first stage; doubled after each stride
        max_channels: int = 256,  # the doubling stops at this many channels
        dilations: list[int] = (1, 3, 9),  # residual units before each strided conv
    ):
        super().__init__()
        self.downsample = (math.prod(strides),)
        widths = _widths(len(strides), hidden, max_channels)
        layers: list[nn.Module] = [nn.Conv1d(in_channels, widths[0], 7, padding=3)]
        for stage, stride in enumerate(strides):
            layers += [ResidualUnit(widths[stage], d) for d in dilations]
            layers += [nn.ELU(), _stride_conv(widths[stage], widths[stage + 1], stride)]
        layers += [nn.ELU(), nn.Conv1d(widths[-1], latent_dim, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SpeechDecoder(nn.Module):
    def __init__(
        self,
        out_channels: int,
        latent_dim: int,
        strides: list[int] = (4, 4, 4),  # must match the encoder's
        hidden: int = 32,
        max_channels: int = 256,
        dilations: list[int] = (1, 3, 9),
    ):
        super().__init__()
        self.downsample = (math.prod(strides),)
        widths = _widths(len(strides), hidden, max_channels)[::-1]
        layers: list[nn.Module] = [nn.Conv1d(latent_dim, widths[0], 7, padding=3)]
        for stage, stride in enumerate(reversed(strides)):
            layers += [nn.ELU(), _stride_conv_transpose(widths[stage], widths[stage + 1], stride)]
            layers += [ResidualUnit(widths[stage + 1], d) for d in dilations]
        layers += [nn.ELU(), nn.Conv1d(widths[-1], out_channels, 7, padding=3)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
