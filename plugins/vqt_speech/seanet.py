"""A SEANet/DAC-style waveform codec network, and an encoder and a decoder that work at the frame rate
(an STFT front end, an iSTFT head).

`SEANetEncoder` / `SEANetDecoder` follow SoundStream, EnCodec and DAC: strided convolutions with dilated
residual units before each stride, Snake or ELU activations, weight normalisation and an option for
causal padding (every output sees only the past). `VocosDecoder` follows Vocos: ConvNeXt blocks at the
code frame rate and a head that predicts a magnitude and a phase per STFT bin, turned into a waveform by
the inverse STFT. It does all its work at the frame rate (one step per `hop` samples), many times less
than a decoder that upsamples to the sample rate, so it trains far faster on a CPU. `VocosEncoder` is
its mirror: log-magnitude STFT frames into ConvNeXt blocks at the frame rate.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


class Snake(nn.Module):
    """x + sin^2(a x) / a with a learnt a per channel: a periodic bias suited to waveforms (BigVGAN, DAC)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + (self.alpha * x).sin().pow(2) / (self.alpha + 1e-9)


def _activation(kind: str, channels: int) -> nn.Module:
    return Snake(channels) if kind == "snake" else nn.ELU()


class PaddedConv(nn.Module):
    """Conv1d with 'same'-style padding for stride 1, or exactly T / stride outputs for T divisible by the
    stride; causal padding puts all of it on the left."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1,
                 causal: bool = False, norm: bool = True):  # fmt: skip
        super().__init__()
        conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation)
        self.conv = weight_norm(conv) if norm else conv
        total = dilation * (kernel - 1) + 1 - stride
        self.pad = (total, 0) if causal else (total - total // 2, total // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.pad))


class PaddedConvTranspose(nn.Module):
    """ConvTranspose1d giving exactly T * stride outputs; causal trimming drops the look-ahead (the right)."""

    def __init__(self, cin: int, cout: int, stride: int, causal: bool = False, norm: bool = True):
        super().__init__()
        conv = nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride)
        self.conv = weight_norm(conv) if norm else conv
        self.trim = (0, stride) if causal else (stride - stride // 2, stride // 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y[..., self.trim[0] : y.shape[-1] - self.trim[1]]


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int, kernel: int, activation: str, causal: bool, norm: bool):
        super().__init__()
        hidden = max(1, channels // 2)
        self.body = nn.Sequential(
            _activation(activation, channels),
            PaddedConv(channels, hidden, kernel, dilation=dilation, causal=causal, norm=norm),
            _activation(activation, hidden),
            PaddedConv(hidden, channels, 1, norm=norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _widths(stages: int, hidden: int, max_channels: int) -> list[int]:
    return [min(hidden * 2**i, max_channels) for i in range(stages + 1)]


class SEANetEncoder(nn.Module):
    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        strides: list[int] = (2, 4, 5, 8),  # product = samples per code frame (320: 50 frames/s at 16 kHz)
        hidden: int = 32,  # channels of the first stage, doubled at every stride
        max_channels: int = 512,  # the doubling stops here
        dilations: list[int] = (1, 3, 9),  # one residual unit per dilation before each stride
        kernel: int = 7,  # of the dilated convolutions in the residual units
        activation: Literal["elu", "snake"] = "elu",
        causal: bool = False,  # pad on the left only: codes depend on the past alone
        weight_norm: bool = True,
        # speech sits near an RMS of 0.05: unscaled, the convolutions' biases swamp it at initialisation, the
        # latents barely vary and the codebook collapses
        input_gain: float = 10.0,
    ):
        super().__init__()
        self.input_gain = input_gain
        self.downsample = (math.prod(strides),)
        widths = _widths(len(strides), hidden, max_channels)
        norm = weight_norm
        layers: list[nn.Module] = [PaddedConv(in_channels, widths[0], 7, causal=causal, norm=norm)]
        for stage, stride in enumerate(strides):
            width = widths[stage]
            layers += [ResidualUnit(width, d, kernel, activation, causal, norm) for d in dilations]
            layers += [
                _activation(activation, width),
                PaddedConv(width, widths[stage + 1], 2 * stride, stride, causal=causal, norm=norm),
            ]
        layers += [
            _activation(activation, widths[-1]),
            PaddedConv(widths[-1], latent_dim, 3, causal=causal, norm=norm),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * self.input_gain)


class SEANetDecoder(nn.Module):
    def __init__(
        self,
        out_channels: int,
        latent_dim: int,
        strides: list[int] = (2, 4, 5, 8),  # the encoder's; applied in reverse
        hidden: int = 32,
        max_channels: int = 512,
        dilations: list[int] = (1, 3, 9),
        kernel: int = 7,
        activation: Literal["elu", "snake"] = "elu",
        causal: bool = False,
        weight_norm: bool = True,
    ):
        super().__init__()
        self.downsample = (math.prod(strides),)
        widths = _widths(len(strides), hidden, max_channels)[::-1]
        norm = weight_norm
        layers: list[nn.Module] = [PaddedConv(latent_dim, widths[0], 7, causal=causal, norm=norm)]
        for stage, stride in enumerate(reversed(strides)):
            width = widths[stage + 1]
            layers += [
                _activation(activation, widths[stage]),
                PaddedConvTranspose(widths[stage], width, stride, causal=causal, norm=norm),
            ]
            layers += [ResidualUnit(width, d, kernel, activation, causal, norm) for d in dilations]
        layers += [
            _activation(activation, widths[-1]),
            PaddedConv(widths[-1], out_channels, 7, causal=causal, norm=norm),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class ConvNeXtBlock(nn.Module):
    """Depthwise conv, LayerNorm, pointwise MLP, layer scale, residual (ConvNeXt, as in Vocos)."""

    def __init__(self, dim: int, expansion: int, kernel: int, causal: bool):
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.pad = (kernel - 1, 0) if causal else ((kernel - 1) // 2, kernel // 2)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, expansion * dim), nn.GELU(), nn.Linear(expansion * dim, dim))
        self.scale = nn.Parameter(torch.full((dim,), 1.0 / 8))  # small residual branches at the start

    def forward(self, x: Tensor) -> Tensor:
        y = rearrange(self.depthwise(F.pad(x, self.pad)), "b c t -> b t c")
        y = self.mlp(self.norm(y)) * self.scale
        return x + rearrange(y, "b t c -> b c t")


class FrameRateTrunk(nn.Module):
    """What the Vocos encoder and decoder share: the STFT framing of a code frame (`subframes` STFT frames
    `hop / subframes` samples apart, windows of `n_fft`) and a ConvNeXt trunk at the frame rate."""

    def __init__(self, channels_in: int, hop: int, n_fft: int, subframes: int, dim: int, layers: int,
                 expansion: int, kernel: int, causal: bool):  # fmt: skip
        super().__init__()
        if subframes < 1 or hop % subframes:
            raise ValueError(f"subframes ({subframes}) must be a positive divisor of hop ({hop})")
        if n_fft < hop // subframes:
            raise ValueError(f"n_fft ({n_fft}) must be at least the STFT hop ({hop // subframes})")
        self.downsample = (hop,)
        self.hop, self.n_fft, self.subframes, self.causal = hop, n_fft, subframes, causal
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.embed = nn.Conv1d(channels_in, dim, 7)
        self.embed_pad = (6, 0) if causal else (3, 3)
        self.norm_in = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, expansion, kernel, causal) for _ in range(layers))
        self.norm_out = nn.LayerNorm(dim, eps=1e-6)

    def trunk(self, x: Tensor) -> Tensor:
        """(B, channels_in, frames) -> (B, frames, dim), normalised."""
        x = self.embed(F.pad(x, self.embed_pad))
        x = rearrange(self.norm_in(rearrange(x, "b c t -> b t c")), "b t c -> b c t")
        for block in self.blocks:
            x = block(x)
        return self.norm_out(rearrange(x, "b c t -> b t c"))


class VocosEncoder(FrameRateTrunk):
    """Waveform -> latents at the code frame rate through a log-magnitude STFT and ConvNeXt blocks.

    The mirror of `VocosDecoder`: `subframes` STFT frames `hop / subframes` samples apart are stacked into
    one code frame, so all learnt work happens at the frame rate. On a CPU this costs a fraction of a
    waveform encoder (SEANet convolves every sample), which buys several times more training steps per
    hour. The phase is dropped: at a few kbps the decoder has to make its own phase anyway.
    """

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hop: int = 320,  # samples per code frame
        n_fft: int = 640,  # window of the analysis STFT
        subframes: int = 2,  # STFT frames per code frame: the STFT hop is hop / subframes
        dim: int = 256,  # channels of the ConvNeXt blocks
        layers: int = 6,  # ConvNeXt blocks
        expansion: int = 3,  # MLP width as a multiple of dim
        kernel: int = 7,  # of the depthwise convolutions
        causal: bool = False,
    ):
        if in_channels != 1:
            raise ValueError(f"the vocos encoder reads mono audio, got in_channels={in_channels}")
        bins = n_fft // 2 + 1
        super().__init__(subframes * bins, hop, n_fft, subframes, dim, layers, expansion, kernel, causal)
        self.project = nn.Linear(dim, latent_dim)

    def features(self, x: Tensor) -> Tensor:
        """(B, 1, T) -> (B, subframes * bins, T / hop): log-magnitudes of each code frame's STFT frames."""
        step = self.hop // self.subframes
        # STFT frame i covers samples [i * step - left, i * step - left + n_fft)
        left = self.n_fft - step if self.causal else (self.n_fft - step) // 2
        audio = F.pad(x[:, 0], (left, self.n_fft - step - left))
        with torch.autocast(x.device.type, enabled=False):
            frames = audio.float().unfold(-1, self.n_fft, step) * self.window
            magnitude = torch.fft.rfft(frames).abs()
            log_magnitude = (magnitude + 1e-5).log()
        return rearrange(log_magnitude, "b (t s) f -> b (s f) t", s=self.subframes)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % self.hop:
            raise ValueError(f"the vocos encoder needs a length divisible by {self.hop}, got {x.shape[-1]}")
        features = self.features(x).to(self.embed.weight.dtype)
        return rearrange(self.project(self.trunk(features)), "b t c -> b c t")


class VocosDecoder(FrameRateTrunk):
    """Latents at the code frame rate -> waveform through ConvNeXt blocks and an inverse STFT head.

    Each code frame predicts log-magnitude and phase of `n_fft // 2 + 1` bins for `subframes` STFT frames
    `hop / subframes` samples apart; `hop` must equal the encoder's downsampling so that T / hop code frames
    give T samples. Subframes keep the synthesis window short when the code frames are long (at 16 kHz, a
    20 ms code frame with a 4 x hop window would blur every onset over 80 ms).
    """

    def __init__(
        self,
        out_channels: int,
        latent_dim: int,
        hop: int = 320,  # samples per frame: the encoder's downsampling
        n_fft: int = 1280,  # window of the inverse STFT (4 x its hop is 75% overlap)
        subframes: int = 1,  # STFT frames per code frame: the STFT hop is hop / subframes
        dim: int = 384,  # channels of the ConvNeXt blocks
        layers: int = 8,  # ConvNeXt blocks
        expansion: int = 3,  # MLP width as a multiple of dim
        kernel: int = 7,  # of the depthwise convolutions
        causal: bool = False,
    ):
        if out_channels != 1:
            raise ValueError(f"the vocos decoder writes mono audio, got out_channels={out_channels}")
        super().__init__(latent_dim, hop, n_fft, subframes, dim, layers, expansion, kernel, causal)
        self.head = nn.Linear(dim, subframes * (n_fft + 2))

    def forward(self, z: Tensor) -> Tensor:
        x = self.head(self.trunk(z))
        with torch.autocast(x.device.type, enabled=False):
            log_magnitude, phase = rearrange(
                x.float(), "b t (s two f) -> two b f (t s)", s=self.subframes, two=2
            )
            magnitude = log_magnitude.clamp(max=6.0).exp()  # exp(6) ~ 400: no overflow while training
            spectrum = torch.polar(magnitude, phase)
            frames = z.shape[-1]
            audio = torch.istft(
                spectrum,
                self.n_fft,
                self.hop // self.subframes,
                window=self.window,
                center=True,
                length=frames * self.hop,
            )
        return rearrange(audio, "b t -> b 1 t")
