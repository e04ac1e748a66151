"""Adversarial losses over discriminator outputs: hinge or least squares, and feature matching.

A discriminator returns a list of `(logits, feature_maps)` pairs, one per sub-discriminator; the
losses below average over the sub-discriminators of every discriminator given.
"""

from __future__ import annotations

import torch
from torch import Tensor

Verdicts = list[tuple[Tensor, list[Tensor]]]


def discriminator_loss(kind: str, real: Verdicts, fake: Verdicts) -> Tensor:
    """Pushes logits of real media up (towards 1) and of generated media down (towards -1 or 0)."""
    terms = []
    for (real_logits, _), (fake_logits, _) in zip(real, fake):
        if kind == "hinge":
            terms.append(torch.relu(1 - real_logits).mean() + torch.relu(1 + fake_logits).mean())
        else:
            terms.append((real_logits - 1).pow(2).mean() + fake_logits.pow(2).mean())
    return torch.stack(terms).mean()


def generator_loss(kind: str, fake: Verdicts) -> Tensor:
    """Rewards generated media the discriminators take for real."""
    if kind == "hinge":
        terms = [torch.relu(1 - logits).mean() for logits, _ in fake]
    else:
        terms = [(logits - 1).pow(2).mean() for logits, _ in fake]
    return torch.stack(terms).mean()


def feature_matching(real: Verdicts, fake: Verdicts) -> Tensor:
    """Mean L1 distance between the feature maps of real and generated media, each layer's distance
    relative to the mean magnitude of its real map (as in EnCodec), so every layer weighs alike."""
    terms = []
    for (_, real_maps), (_, fake_maps) in zip(real, fake):
        for real_map, fake_map in zip(real_maps, fake_maps):
            real_map = real_map.detach()
            terms.append((real_map - fake_map).abs().mean() / (real_map.abs().mean() + 1e-5))
    return torch.stack(terms).mean()


def split_verdicts(verdicts: Verdicts, first: int) -> tuple[Verdicts, Verdicts]:
    """Verdicts on a batch of [first items; the rest] -> (verdicts on the first, verdicts on the rest)."""
    head = [(logits[:first], [m[:first] for m in maps]) for logits, maps in verdicts]
    tail = [(logits[first:], [m[first:] for m in maps]) for logits, maps in verdicts]
    return head, tail
