"""Held-out evaluation: reconstruction metrics, codebook usage, ELBO and bits/dim."""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch.utils.data import DataLoader

from vqtoolkit.model import Autoencoder
from vqtoolkit.nn.gaussian import GaussianBottleneck


@torch.no_grad()
def evaluate(
    model: Autoencoder,
    loader: DataLoader,
    metrics: dict,
    device,
    value_range=(0.0, 1.0),
    max_batches: int = 0,
) -> dict:
    model.eval()
    bottleneck = model.bottleneck
    if hasattr(bottleneck, "reset_usage"):
        bottleneck.reset_usage()
    sums: dict[str, float] = defaultdict(float)
    count = 0
    for index, batch in enumerate(loader):
        if max_batches and index >= max_batches:
            break
        x = batch.to(device)
        z = model.encoder(x)
        # The ELBO is an expectation over q(z|x): sample z even in eval mode.
        out = bottleneck(z, sample=True) if isinstance(bottleneck, GaussianBottleneck) else bottleneck(z)
        raw = model.decoder(out.z)
        recon = model.recon_loss.per_example(raw, x)
        media = model.media(raw).float().clamp(*value_range)
        sums["recon_loss"] += recon.sum().item()
        for name, fn in metrics.items():
            sums[name] += fn(media, x).sum().item()
        if "kl_per_example" in out.stats:
            nll = recon + out.stats["kl_per_example"]
            sums["elbo"] -= nll.sum().item()
            if model.recon_loss.is_nll:
                sums["bits_per_dim"] += (nll / (x[0].numel() * math.log(2))).sum().item()
        count += len(x)
    results = {name: value / max(count, 1) for name, value in sums.items()}
    if hasattr(bottleneck, "usage_stats"):
        results.update({f"codebook_{k}": v for k, v in bottleneck.usage_stats().items()})
    results["examples"] = count
    return results


def usage_summary(results: dict, codebook_sizes: list[int]) -> str:
    """One line on the held-out code usage in `results` ("" for a continuous bottleneck)."""
    if "codebook_used_fraction" not in results or not codebook_sizes:
        return ""
    sizes = codebook_sizes[0] if len(set(codebook_sizes)) == 1 else codebook_sizes
    stages = f" in each of {len(codebook_sizes)} codebooks" if len(codebook_sizes) > 1 else ""
    return (
        f"codebook usage on the held-out data: {results['codebook_used_fraction']:.1%} of {sizes} codes"
        f"{stages} used, perplexity {results['codebook_perplexity']:.1f}"
    )


def metric_functions(modality, recipe) -> dict:
    """The registered metrics a held-out evaluation computes: the modality's, then the recipe's
    `eval.metrics`."""
    from vqtoolkit.plugins import registry

    names = dict.fromkeys([*modality.metrics, *recipe.eval.metrics])
    return {name: registry("metrics").get(name, "eval.metrics") for name in names}
