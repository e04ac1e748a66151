"""Reconstruction losses, each a per-example value so ELBO and bits/dim follow directly."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import reduce
from torch import Tensor

from vqtoolkit.nn.gaussian import bce_sum, half_l2_sum


class MSELoss:
    """Mean squared error per example (the plain autoencoder's and VQ-VAE's reconstruction loss)."""

    is_nll = False

    def per_example(self, output: Tensor, target: Tensor) -> Tensor:
        return reduce((output.float() - target.float()) ** 2, "b ... -> b", "mean")

    def to_media(self, output: Tensor) -> Tensor:
        return output


class L1Loss(MSELoss):
    def per_example(self, output: Tensor, target: Tensor) -> Tensor:
        return reduce((output.float() - target.float()).abs(), "b ... -> b", "mean")


class HalfL2SumLoss(MSELoss):
    """½‖x̂ − x‖² summed per example: the negative log-likelihood of a unit Gaussian up to a constant."""

    is_nll = True

    def per_example(self, output: Tensor, target: Tensor) -> Tensor:
        return half_l2_sum(output.float(), target.float())


class BCESumLoss:
    """Binary cross-entropy summed per example; the decoder outputs logits (x̂ = sigmoid(logits))."""

    is_nll = True

    def per_example(self, output: Tensor, target: Tensor) -> Tensor:
        return bce_sum(output.float(), target.float())

    def to_media(self, output: Tensor) -> Tensor:
        return torch.sigmoid(output)


def mse_metric(output: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per example."""
    return F.mse_loss(output.float(), target.float(), reduction="none").flatten(1).mean(1)
