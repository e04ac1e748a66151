"""Autoencoder = encoder -> bottleneck -> decoder, any rank, assembled from registered names."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vqtoolkit.config import Recipe, RecipeError, instantiate
from vqtoolkit.nn.base import Bottleneck, BottleneckOutput


@dataclass
class ModelOutput:
    output: Tensor  # raw decoder output (logits for a BCE loss); `media` applies the loss's activation
    loss: Tensor  # reconstruction (mean over the batch of per-example values) + bottleneck loss
    recon_per_example: Tensor  # (B,)
    bottleneck: BottleneckOutput


class Autoencoder(nn.Module):
    def __init__(
        self, encoder: nn.Module, bottleneck: Bottleneck, decoder: nn.Module, loss, modality: str = ""
    ):
        super().__init__()
        self.encoder, self.bottleneck, self.decoder = encoder, bottleneck, decoder
        self.recon_loss = loss
        self.modality = modality

    @property
    def discrete(self) -> bool:
        return self.bottleneck.discrete

    @property
    def downsample(self) -> tuple[int, ...]:
        return tuple(getattr(self.encoder, "downsample", ()))

    def forward(self, x: Tensor) -> ModelOutput:
        bottleneck = self.bottleneck(self.encoder(x))
        output = self.decoder(bottleneck.z)
        recon = self.recon_loss.per_example(output, x)
        return ModelOutput(output, recon.mean() + bottleneck.loss, recon, bottleneck)

    def media(self, output: Tensor) -> Tensor:
        return self.recon_loss.to_media(output)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.media(self(x).output)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Media (B, C, *grid) -> integer codes (B, *latent_grid), or (B, Q, *latent_grid) for residual VQ."""
        return self.bottleneck.encode(self.encoder(x))

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        return self.media(self.decoder(self.bottleneck.decode(codes)))


DISCRETE_CONTRACT = ("encode", "decode", "codebook_sizes", "usage_stats", "reset_usage")


def check_bottleneck(bottleneck: Bottleneck, name: str, plugin: str) -> None:
    """A discrete bottleneck must implement the whole contract (see docs/plugins.md): one line naming the
    plugin and what is missing, before anything is trained or tokenized with it."""
    if not isinstance(bottleneck, Bottleneck):
        raise RecipeError(f"bottleneck '{name}' of plugin '{plugin}' is not a vqtoolkit.nn.base.Bottleneck")
    if not bottleneck.discrete:
        return
    missing = [
        method
        for method in DISCRETE_CONTRACT
        if not callable(getattr(bottleneck, method, None))
        or getattr(type(bottleneck), method, None) is getattr(Bottleneck, method, None)
    ]
    if missing:
        raise RecipeError(
            f"bottleneck '{name}' of plugin '{plugin}' is discrete but does not implement "
            f"{', '.join(missing)} (see the bottleneck contract in docs/plugins.md)"
        )
    sizes = bottleneck.codebook_sizes()
    if not sizes or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in sizes):
        raise RecipeError(
            f"bottleneck '{name}' of plugin '{plugin}': codebook_sizes() must list one positive integer per "
            f"codebook, got {sizes!r}"
        )


def build_model(recipe: Recipe) -> Autoencoder:
    from vqtoolkit.plugins import registry

    modality = registry("modalities").get(recipe.data.modality, "data.modality")
    channels, latent = recipe.data.channels, recipe.model.latent_dim
    model = recipe.model
    # built in this order: each draws its initial weights from the seeded generator in turn
    encoder = instantiate("encoders", model.encoder, "model.encoder", modality.encoder, channels, latent)
    bottleneck = instantiate("bottlenecks", recipe.bottleneck, "bottleneck", "", latent)
    entry = registry("bottlenecks").entry(recipe.bottleneck.name)
    check_bottleneck(bottleneck, entry.name, entry.plugin)
    return Autoencoder(
        encoder=encoder,
        bottleneck=bottleneck,
        decoder=instantiate("decoders", model.decoder, "model.decoder", modality.decoder, channels, latent),
        loss=instantiate("losses", model.loss, "model.loss", modality.loss),
        modality=recipe.data.modality,
    )


def memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_model_size(recipe: Recipe, source: str = "recipe") -> int:
    """Build the recipe's model on the meta device (no memory) and refuse, in one line, one whose training
    state (weights, gradients and two AdamW moments, fp32) would not fit in this machine's memory.
    Returns the parameter count."""
    try:
        with torch.device("meta"):
            model = build_model(recipe)
    except (RuntimeError, OverflowError) as exc:  # e.g. a negative or absurd size a factory passed on
        raise RecipeError(f"{source}: the model cannot be built: {str(exc).splitlines()[0][:200]}") from None
    count = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    needed, available = 16 * count, memory_bytes()
    if needed > available:
        raise RecipeError(
            f"{source}: the model has {count:.3g} parameters, about {needed / 2**30:.0f} GB to train "
            f"(fp32 weights, gradients and AdamW moments); this machine has {available / 2**30:.0f} GB"
        )
    return count
