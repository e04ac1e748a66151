"""Continuous bottlenecks (Gaussian VAE, plain autoencoder) and the VAE loss terms.

Every loss helper returns one value per example, shape (B,), summed over all other dims, as the
lecture's sum-reduced losses are; average over the batch yourself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn

from vqtoolkit.nn.base import Bottleneck, BottleneckOutput


def _sum_per_example(values: Tensor) -> Tensor:
    return reduce(values, "b ... -> b", "sum")


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example: -1/2 sum(1 + logvar - mean^2 - exp(logvar))."""
    return -0.5 * _sum_per_example(1 + logvar - mean.pow(2) - logvar.exp())


def reparameterize(mean: Tensor, logvar: Tensor) -> Tensor:
    """z = mean + sigma * eps with sigma = exp(logvar / 2), eps ~ N(0, I): a sample that carries gradients."""
    return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)


def bce_sum(logits: Tensor, x: Tensor) -> Tensor:
    """Binary cross-entropy of sigmoid(logits) against x in [0, 1], per example.

    Same value as binary_cross_entropy(sigmoid(logits), x, reduction='sum') per example, but stable.
    """
    return _sum_per_example(F.binary_cross_entropy_with_logits(logits, x, reduction="none"))


def half_l2_sum(x_hat: Tensor, x: Tensor) -> Tensor:
    """1/2 ||x_hat - x||^2 per example: the Gaussian negative log-likelihood up to a constant."""
    return 0.5 * _sum_per_example((x_hat - x).pow(2))


def elbo(recon_nll: Tensor, kl: Tensor) -> Tensor:
    """Evidence lower bound -(L_recon + L_KL), a lower bound on log p(x)."""
    return -(recon_nll + kl)


def bits_per_dim(nll_per_example: Tensor, num_dims: int) -> Tensor:
    """Negative log-likelihood in nats per example -> bits per data dimension."""
    return nll_per_example / (num_dims * math.log(2))


class GaussianBottleneck(Bottleneck):
    """VAE bottleneck: per-position mean and log-variance heads, reparameterised sampling, closed-form KL.

    Args:
        dim: latent channels.
        kl_weight: weight of the KL term in the loss (1 = the ELBO; other values give a beta-VAE).
    """

    def __init__(self, dim: int, kl_weight: float = 1.0) -> None:
        super().__init__()
        self.kl_weight = kl_weight
        self.mean_head = nn.Linear(dim, dim)
        self.logvar_head = nn.Linear(dim, dim)

    def forward(self, z: Tensor, sample: bool | None = None) -> BottleneckOutput:
        """`sample` defaults to training mode; otherwise the decoder sees the mean."""
        channel_last = rearrange(z, "b c ... -> b ... c")
        mean, logvar = self.mean_head(channel_last), self.logvar_head(channel_last)
        if sample is None:
            sample = self.training
        latent = reparameterize(mean, logvar) if sample else mean
        kl = kl_divergence(mean.float(), logvar.float())
        return BottleneckOutput(
            z=rearrange(latent, "b ... c -> b c ..."),
            loss=self.kl_weight * kl.mean(),
            stats={"kl": kl.mean().detach(), "kl_per_example": kl.detach()},
        )


class IdentityBottleneck(Bottleneck):
    """Plain autoencoder: latents pass through unchanged, no auxiliary loss.

    Args:
        dim: latent channels (unused; kept so every bottleneck is built the same way).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, z: Tensor) -> BottleneckOutput:
        return BottleneckOutput(z=z, loss=z.new_zeros((), dtype=torch.float32))
