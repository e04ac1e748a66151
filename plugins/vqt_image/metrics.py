"""Image (and video) quality metrics: PSNR and SSIM, one value per example, media in [0, 1].

Both take (B, C, H, W) images or (B, C, T, H, W) video; video is scored frame by frame (T folded
into the batch) and the frame scores are averaged per example.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

MSE_FLOOR = 1e-10  # identical images: PSNR = 10 log10(1 / 1e-10) = 100 dB, the largest value returned
SSIM_K1, SSIM_K2 = 0.01, 0.03  # Wang et al. 2004; with data range 1, C1 = K1², C2 = K2²


def _per_frame(metric: Callable[[Tensor, Tensor], Tensor], recon: Tensor, target: Tensor) -> Tensor:
    """Apply an image metric to (B, C, H, W), or to each frame of (B, C, T, H, W) and average over T."""
    if recon.shape != target.shape:
        raise ValueError(f"reconstruction {tuple(recon.shape)} and target {tuple(target.shape)} differ")
    if recon.ndim == 4:
        return metric(recon.float(), target.float())
    if recon.ndim != 5:
        raise ValueError(f"expected (B, C, H, W) or (B, C, T, H, W), got {tuple(recon.shape)}")
    recon_frames, target_frames = (rearrange(v.float(), "b c t h w -> (b t) c h w") for v in (recon, target))
    return reduce(metric(recon_frames, target_frames), "(b t) -> b", "mean", t=recon.shape[2])


def psnr(recon: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB, 10 log10(1 / MSE) with data range 1, shape (B,).

    The MSE is floored at 1e-10, so identical images score 100 dB rather than infinity.
    """

    def image_psnr(x: Tensor, y: Tensor) -> Tensor:
        mse = reduce((x - y) ** 2, "b c h w -> b", "mean")
        return -10 * torch.log10(mse.clamp_min(MSE_FLOOR))

    return _per_frame(image_psnr, recon, target)


def window_1d(size: int, sigma: float | None) -> Tensor:
    """A normalised 1-D window: Gaussian with std `sigma` centred on the window, or uniform if None."""
    if sigma is None:
        return torch.full((size,), 1.0 / size)
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    return (weights / weights.sum()).float()


def ssim(recon: Tensor, target: Tensor, window_size: int = 11, sigma: float | None = 1.5) -> Tensor:
    """Structural similarity (Wang et al. 2004), shape (B,): the SSIM map averaged over pixels and channels.

    Local statistics use a window_size x window_size Gaussian window (std `sigma`; `sigma=None` gives a
    uniform window), applied per channel as a depthwise convolution with valid padding. An image
    smaller than the window along an axis uses a window as long as that axis. Data range 1:
    C1 = (0.01)², C2 = (0.03)².
    """

    def image_ssim(x: Tensor, y: Tensor) -> Tensor:
        channels, height, width = x.shape[1:]
        rows = window_1d(min(window_size, height), sigma).to(x)
        cols = window_1d(min(window_size, width), sigma).to(x)
        kernel = (rows[:, None] * cols[None, :]).expand(channels, 1, -1, -1)

        def local_mean(image: Tensor) -> Tensor:
            return F.conv2d(image, kernel, groups=channels)

        mu_x, mu_y = local_mean(x), local_mean(y)
        var_x = local_mean(x * x) - mu_x**2
        var_y = local_mean(y * y) - mu_y**2
        cov = local_mean(x * y) - mu_x * mu_y
        c1, c2 = SSIM_K1**2, SSIM_K2**2
        luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
        contrast_structure = (2 * cov + c2) / (var_x + var_y + c2)
        ssim_map = luminance * contrast_structure
        return reduce(ssim_map, "b c h w -> b", "mean")

    return _per_frame(image_ssim, recon, target)
