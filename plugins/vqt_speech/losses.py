"""Speech losses and metrics: waveform L1 + multi-resolution log-mel, SI-SNR, log-mel distance."""

from __future__ import annotations

import torch
import torchaudio
from einops import reduce
from torch import Tensor


class LogMel:
    """Log-mel spectrogram at one resolution, with transforms cached per device."""

    def __init__(self, sample_rate: int, n_fft: int, n_mels: int = 64, floor: float = 1e-5):
        self.sample_rate, self.n_fft, self.n_mels, self.floor = sample_rate, n_fft, n_mels, floor
        self._transforms: dict[torch.device, torchaudio.transforms.MelSpectrogram] = {}

    def __call__(self, audio: Tensor) -> Tensor:
        device = audio.device
        if device not in self._transforms:
            self._transforms[device] = torchaudio.transforms.MelSpectrogram(
                self.sample_rate, n_fft=self.n_fft, hop_length=self.n_fft // 4, n_mels=self.n_mels, power=1.0
            ).to(device)
        with torch.autocast(device.type, enabled=False):
            return torch.log(self._transforms[device](audio.float()).clamp(min=self.floor))


class SpeechLoss:
    """Waveform L1 plus the mean L1 distance between log-mel spectrograms at several FFT sizes."""

    is_nll = False

    def __init__(
        self,
        sample_rate: int = 16000,  # of the audio, for the mel filters (the recipe's data.sample_rate)
        fft_sizes: list[int] = (512, 1024, 2048),  # one log-mel distance per FFT size, summed
        # mel bands per FFT size (one number for all, or one per size): 64 bands at 16 kHz are hundreds
        # of Hz wide above 2 kHz, too coarse to see a voice's harmonics; finer bands at the long FFTs
        # make the loss see them (DAC doubles the bands with each doubling of the window)
        mel_bands: int | list[int] = 64,
        l1_weight: float = 1.0,  # weight of the waveform L1 term
        mel_weight: float = 1.0,  # weight of the multi-resolution log-mel term
        # mel magnitudes below this count as silence: a lower floor spends the loss on noise far under speech
        log_floor: float = 1e-5,
    ):
        self.l1_weight, self.mel_weight = l1_weight, mel_weight
        bands = [mel_bands] * len(fft_sizes) if isinstance(mel_bands, int) else list(mel_bands)
        if len(bands) != len(fft_sizes) or min(bands, default=1) < 1:
            raise ValueError(
                f"mel_bands: one positive number, or one per FFT size ({len(fft_sizes)}), not {mel_bands}"
            )
        self.mels = [LogMel(sample_rate, n_fft, n, log_floor) for n_fft, n in zip(fft_sizes, bands)]

    def per_example(self, output: Tensor, target: Tensor) -> Tensor:
        loss = self.l1_weight * reduce((output.float() - target.float()).abs(), "b ... -> b", "mean")
        for mel in self.mels:
            distance = (mel(output) - mel(target)).abs()
            loss = loss + self.mel_weight / len(self.mels) * reduce(distance, "b ... -> b", "mean")
        return loss

    def to_media(self, output: Tensor) -> Tensor:
        return output


def si_snr(recon: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant signal-to-noise ratio in dB per example (higher is better)."""
    recon, target = recon.flatten(1).double(), target.flatten(1).double()
    recon = recon - recon.mean(1, keepdim=True)
    target = target - target.mean(1, keepdim=True)
    scale = (recon * target).sum(1, keepdim=True) / (target.pow(2).sum(1, keepdim=True) + eps)
    projection = scale * target
    noise = recon - projection
    return (10 * torch.log10((projection.pow(2).sum(1) + eps) / (noise.pow(2).sum(1) + eps))).float()


_METRIC_MEL = LogMel(16000, 1024, 80)


def log_mel_distance(recon: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference of 80-band log-mel spectrograms (16 kHz, 1024-point FFT); lower is better."""
    return reduce((_METRIC_MEL(recon) - _METRIC_MEL(target)).abs(), "b ... -> b", "mean")
