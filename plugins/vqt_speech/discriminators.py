"""Waveform discriminators: multi-period (HiFi-GAN) and multi-resolution complex STFT (EnCodec, DAC).

Each discriminator maps audio (B, 1, T) to a list with one `(logits, feature_maps)` pair per
sub-discriminator; the adversarial and feature-matching losses in `vqtoolkit.adversarial` read that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

SLOPE = 0.1  # leaky ReLU slope of HiFi-GAN and EnCodec


def _check_mono(name: str, in_channels: int, rank: int) -> None:
    if (in_channels, rank) != (1, 1):
        raise ValueError(
            f"the {name} discriminator judges mono audio, got {in_channels} channels, rank {rank}"
        )


def _widths(channels: int, max_channels: int, count: int) -> list[int]:
    return [min(channels * 4**i, max_channels) for i in range(count)]


class PeriodDiscriminator(nn.Module):
    """The waveform folded into (T / period, period) columns, 2D convolutions along time only."""

    def __init__(self, period: int, channels: int, max_channels: int):
        super().__init__()
        self.period = period
        widths = [1, *_widths(channels, max_channels, 4)]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(cin, cout, (5, 1), (3, 1), padding=(2, 0)))
            for cin, cout in zip(widths[:-1], widths[1:])
        )
        self.convs.append(weight_norm(nn.Conv2d(widths[-1], widths[-1], (5, 1), padding=(2, 0))))
        self.out = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        pad = -audio.shape[-1] % self.period
        x = F.pad(audio, (0, pad), mode="reflect" if pad < audio.shape[-1] else "constant")
        x = rearrange(x, "b c (t p) -> b c t p", p=self.period)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), SLOPE)
            features.append(x)
        return self.out(x), features


class MultiPeriodDiscriminator(nn.Module):
    def __init__(
        self,
        in_channels: int,
        rank: int,
        periods: list[int] = (2, 3, 5, 7, 11),  # prime periods, as in HiFi-GAN
        channels: int = 16,  # of the first layer, x4 per layer (HiFi-GAN: 32)
        max_channels: int = 256,  # (HiFi-GAN: 1024)
    ):
        super().__init__()
        _check_mono("mpd", in_channels, rank)
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels, max_channels) for p in periods)

    def forward(self, audio: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        return [d(audio) for d in self.discriminators]


class STFTDiscriminator(nn.Module):
    """2D convolutions over the real and imaginary parts of one STFT, strided along frequency."""

    def __init__(self, n_fft: int, channels: int):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        c = channels
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(2, c, (3, 9), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), dilation=(1, 1), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), dilation=(2, 1), padding=(2, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), dilation=(4, 1), padding=(4, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 3), padding=(1, 1))),
        ])  # fmt: skip
        self.out = weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        with torch.autocast(audio.device.type, enabled=False):
            spectrum = torch.stft(
                rearrange(audio.float(), "b 1 t -> b t"), self.n_fft, self.n_fft // 4,
                window=self.window, return_complex=True,
            )  # fmt: skip
        x = rearrange(torch.view_as_real(spectrum), "b f t two -> b two t f")
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), SLOPE)
            features.append(x)
        return self.out(x), features


class MultiResolutionSTFTDiscriminator(nn.Module):
    def __init__(
        self,
        in_channels: int,
        rank: int,
        fft_sizes: list[int] = (2048, 1024, 512),  # one sub-discriminator per STFT resolution
        channels: int = 32,
    ):
        super().__init__()
        _check_mono("mrstft", in_channels, rank)
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, channels) for n in fft_sizes)

    def forward(self, audio: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        return [d(audio) for d in self.discriminators]
