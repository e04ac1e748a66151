"""Codebook-free quantisers: FSQ (finite scalar quantisation), residual FSQ and LFQ (lookup-free).

Each projects the latent (B, D, *grid) to a few channels, quantises every channel on its own to a fixed
set of values, and reads the code as a mixed-radix (FSQ) or binary (LFQ) number of those values. There is
no codebook to learn, so none can collapse; the implicit codebook's usage is still counted and reported.
All quantisation arithmetic runs in fp32, outside autocast.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from vqtoolkit.nn.base import Bottleneck, BottleneckOutput
from vqtoolkit.nn.quantize import (
    _check_latents,
    _perplexity,
    quantizer_dropout_mask,
    stage_weight,
    staged_usage,
    usage_from_counts,
)
from vqtoolkit.ranges import FRACTION, NOT_NEGATIVE, POSITIVE, Range

MAX_CODES = 2**24  # implicit codebooks beyond this would make usage counts (and code files) unwieldy
EXACT_ENTROPY_BITS = 12  # LFQ: the batch entropy over all 2^bits codes up to here, per bit beyond


def _channels_last(z: Tensor) -> Tensor:
    return rearrange(z, "b d ... -> b ... d")


def _channels_first(z: Tensor) -> Tensor:
    return rearrange(z, "b ... d -> b d ...")


def _projection(dim: int, channels: int) -> tuple[nn.Module, nn.Module]:
    if dim == channels:
        return nn.Identity(), nn.Identity()
    return nn.Linear(dim, channels), nn.Linear(channels, dim)


def _project(linear: nn.Module, z: Tensor) -> Tensor:
    """`linear` over the channels of channel-first z (B, D, *grid), as one batched matrix product on z's own
    layout: neither z nor the gradient that comes back (channel-first, from a decoder) is copied into
    channel-last order, which costs more than the product itself when D is wide and the output narrow."""
    if isinstance(linear, nn.Identity):
        return z
    flat = z.flatten(2)
    weight = linear.weight.expand(z.shape[0], *linear.weight.shape)
    if linear.bias is None:
        out = torch.bmm(weight, flat)
    else:
        out = torch.baddbmm(linear.bias[:, None].expand(z.shape[0], -1, flat.shape[2]), weight, flat)
    return out.view(z.shape[0], -1, *z.shape[2:])


class _UsageCounter(nn.Module):
    """Counts of an implicit codebook's codes since the last reset, for `usage_stats`."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.register_buffer("counts", torch.zeros(size, dtype=torch.float64), persistent=False)

    def add(self, codes: Tensor) -> Tensor:
        counts = torch.bincount(codes.flatten(), minlength=self.size)
        self.counts += counts
        return counts.float()


class FSQ(Bottleneck):
    """Finite scalar quantisation (Mentzer et al. 2023): channel i is bounded by tanh to `levels[i]`
    values and rounded, with a straight-through gradient. The code is the mixed-radix number of the
    rounded channels, one of prod(levels). The decoder sees the rounded values scaled into [-1, 1].

    Args:
        dim: latent channels D (projected to len(levels) channels and back when they differ).
        levels: values per channel, e.g. [8, 5, 5, 5] (1000 codes) or [8, 8, 8, 5, 5, 5] (64000).
    """

    discrete = True
    residual = False

    def __init__(self, dim: int, levels: list[Annotated[int, Range(2, 2**16)]] = (8, 5, 5, 5)):
        super().__init__()
        levels = list(levels)
        if not levels or min(levels) < 2:
            raise ValueError(f"levels: at least one channel, each with 2 or more values, not {levels}")
        if math.prod(levels) > MAX_CODES:
            raise ValueError(f"levels {levels} make {math.prod(levels)} codes; at most {MAX_CODES}")
        self.dim, self.size = dim, math.prod(levels)
        self.project_in, self.project_out = _projection(dim, len(levels))
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        self.register_buffer("basis", torch.tensor([math.prod(levels[:i]) for i in range(len(levels))]),
                             persistent=False)  # fmt: skip
        self.usage = _UsageCounter(self.size)

    def codebook_sizes(self) -> list[int]:
        return [self.size]

    def bound(self, z: Tensor) -> Tensor:
        """Channels -> (-L/2, L/2) shifted so that rounding gives exactly L values (L even included)."""
        half = (self.levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Channel-last fp32 (..., len(levels)) -> (values in [-1, 1] with straight-through grad, codes)."""
        bounded = self.bound(z)
        rounded = bounded + (bounded.round() - bounded).detach()
        half_width = torch.div(self.levels, 2, rounding_mode="floor")
        digits = (rounded.detach() + half_width).long()
        return rounded / half_width, (digits * self.basis).sum(-1)

    def values(self, codes: Tensor) -> Tensor:
        """Codes (...) -> channel-last values (..., len(levels)) in [-1, 1]."""
        digits = (codes[..., None] // self.basis) % self.levels.long()
        half_width = torch.div(self.levels, 2, rounding_mode="floor")
        return (digits - half_width) / half_width

    def forward(self, z: Tensor) -> BottleneckOutput:
        _check_latents(z, self.dim)
        with torch.autocast(z.device.type, enabled=False):
            values, codes = self.quantize(_channels_last(_project(self.project_in, z.float())))
            out = _project(self.project_out, _channels_first(values))
        counts = self.usage.add(codes)
        stats = {"perplexity": _perplexity(counts), "usage": (counts > 0).float().mean()}
        return BottleneckOutput(z=out.to(z.dtype), loss=z.new_zeros((), dtype=torch.float32), codes=codes,
                                stats=stats)  # fmt: skip

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        _check_latents(z, self.dim)
        with torch.autocast(z.device.type, enabled=False):
            codes = self.quantize(_channels_last(_project(self.project_in, z.float())))[1]
        self.usage.add(codes)
        return codes

    def decode(self, codes: Tensor) -> Tensor:
        return _project(self.project_out, _channels_first(self.values(codes)))

    def reset_usage(self) -> None:
        self.usage.counts.zero_()

    def usage_stats(self) -> dict[str, float]:
        return usage_from_counts(self.usage.counts)


class ResidualFSQ(Bottleneck):
    """Residual FSQ: stage q quantises what the earlier stages left, scaled up by (L - 1)^q per channel
    so that each stage's finer residual fills its range; the decoder sees the sum.

    Args:
        dim: latent channels D (projected once to len(levels) channels and back).
        levels: values per channel in every stage.
        num_quantizers: stages Q.
        quantizer_dropout: probability that a training example keeps only its first n ~ U{1..Q} stages,
            so that `decode` of the first N stages is good at every N (variable bitrate from one model).
    """

    discrete = True
    residual = True  # the codes of the first N stages decode on their own

    def __init__(
        self,
        dim: int,
        levels: list[Annotated[int, Range(2, 2**16)]] = (8, 5, 5, 5),
        num_quantizers: Annotated[int, Range(1, 256)] = 4,
        quantizer_dropout: Annotated[float, FRACTION] = 0.0,
    ):
        super().__init__()
        if num_quantizers < 1 or not 0 <= quantizer_dropout <= 1:
            raise ValueError("num_quantizers must be at least 1 and quantizer_dropout within [0, 1]")
        self.dim, self.quantizer_dropout = dim, quantizer_dropout
        self.project_in, self.project_out = _projection(dim, len(levels))
        self.stages = nn.ModuleList(FSQ(len(levels), levels) for _ in range(num_quantizers))
        scales = torch.stack([(self.stages[0].levels - 1) ** -q for q in range(num_quantizers)])
        self.register_buffer("scales", scales, persistent=False)

    def codebook_sizes(self) -> list[int]:
        return [stage.size for stage in self.stages]

    def forward(self, z: Tensor) -> BottleneckOutput:
        _check_latents(z, self.dim)
        with torch.autocast(z.device.type, enabled=False):
            residual = _channels_last(_project(self.project_in, z.float()))
            mask = torch.ones(z.shape[0], len(self.stages), device=z.device)
            if self.training and self.quantizer_dropout > 0:
                mask = quantizer_dropout_mask(z.shape[0], len(self.stages), self.quantizer_dropout, z.device)
            total, codes, counts = torch.zeros_like(residual), [], []
            for q, (stage, scale) in enumerate(zip(self.stages, self.scales)):
                values, stage_codes = stage.quantize(residual / scale)
                values = values * scale
                residual = residual - values.detach()
                total = total + values * stage_weight(mask, q, values)
                codes.append(stage_codes)
                counts.append(stage.usage.add(stage_codes))
            out = _project(self.project_out, _channels_first(total))
        stats = {
            "perplexity": torch.stack([_perplexity(c) for c in counts]).mean(),
            "usage": torch.stack([(c > 0).float().mean() for c in counts]).mean(),
        }
        return BottleneckOutput(z=out.to(z.dtype), loss=z.new_zeros((), dtype=torch.float32),
                                codes=torch.stack(codes, 1), stats=stats)  # fmt: skip

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """Latents (B, D, *grid) -> codes (B, Q, *grid)."""
        was_training = self.training
        self.eval()
        codes = self(z).codes
        self.train(was_training)
        return codes

    def decode(self, codes: Tensor) -> Tensor:
        """Codes (B, Q', *grid), Q' <= Q: the first Q' stages -> latents (B, D, *grid)."""
        if codes.shape[1] > len(self.stages):
            raise ValueError(f"got {codes.shape[1]} code levels, this ResidualFSQ has {len(self.stages)}")
        total = sum(
            stage.values(stage_codes) * scale
            for stage, scale, stage_codes in zip(self.stages, self.scales, codes.unbind(1))
        )
        return _project(self.project_out, _channels_first(total))

    def reset_usage(self) -> None:
        for stage in self.stages:
            stage.reset_usage()

    def usage_stats(self) -> dict[str, float]:
        return staged_usage([stage.usage_stats() for stage in self.stages])


def binary_entropy(p: Tensor, eps: float = 1e-6) -> Tensor:
    """Entropy in nats of Bernoulli(p), elementwise; p is kept within [eps, 1 - eps] so that the gradient
    stays finite where p saturates."""
    p = p.clamp(eps, 1 - eps)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def logit_entropy(logits: Tensor) -> Tensor:
    """Entropy in nats of Bernoulli(sigmoid(a)), from a directly: finite value and gradient for any a."""
    p = torch.sigmoid(logits)
    return p * F.softplus(-logits) + (1 - p) * F.softplus(logits)


def lfq_entropies(z: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """(mean per-sample entropy, entropy of the batch's mean distribution) in nats, of the code
    distribution p(c | z) = softmax_c(-||z - c||^2 / temperature) over c in {-1, 1}^bits.

    That distribution factorises over bits: p(c_i = 1 | z_i) = sigmoid(4 z_i / temperature), so the
    per-sample entropy is a sum of bit entropies. The mean distribution does not factorise: it is taken
    over all 2^bits codes up to EXACT_ENTROPY_BITS bits, and beyond as the sum of the mean bits'
    entropies (an upper bound, as in BSQ).
    """
    bits = z.shape[-1]
    logits = 4 * z.reshape(-1, bits) / temperature
    per_sample = logit_entropy(logits).sum(-1).mean()
    if bits > EXACT_ENTROPY_BITS:
        return per_sample, binary_entropy(torch.sigmoid(logits).mean(0)).sum()
    table = (torch.arange(2**bits, device=z.device)[:, None] >> torch.arange(bits, device=z.device)) & 1
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
    joint = (log_p @ table.float().T + log_q @ (1 - table).float().T).exp().mean(0)  # (2^bits,)
    return per_sample, -(joint * joint.clamp(min=1e-12).log()).sum()


class LFQ(Bottleneck):
    """Lookup-free quantisation (MAGVIT-v2, Yu et al. 2023): `bits` channels, each quantised to its sign
    (+-1) with a straight-through gradient; the code is the binary number of the signs (2^bits codes).

    Loss: commitment weight * mean (z - sg[q])^2 + entropy weight * (per-sample entropy - diversity *
    batch entropy): each latent confident of its code, the batch spread over all codes.

    Args:
        dim: latent channels D (projected to `bits` channels and back when they differ).
        bits: channels quantised to one bit each.
        entropy_weight, diversity, commitment_weight, temperature: as above.
    """

    discrete = True
    residual = False

    def __init__(
        self,
        dim: int,
        bits: Annotated[int, Range(1, 24)] = 10,
        entropy_weight: Annotated[float, NOT_NEGATIVE] = 0.1,
        diversity: Annotated[float, NOT_NEGATIVE] = 1.0,
        commitment_weight: Annotated[float, NOT_NEGATIVE] = 0.25,
        temperature: Annotated[float, POSITIVE] = 0.01,
    ):
        super().__init__()
        if not 1 <= bits <= 24:
            raise ValueError(f"bits: 1 to 24, not {bits}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, not {temperature}")
        self.dim, self.bits = dim, bits
        self.entropy_weight, self.diversity = entropy_weight, diversity
        self.commitment_weight, self.temperature = commitment_weight, temperature
        self.project_in, self.project_out = _projection(dim, bits)
        self.register_buffer("powers", 2 ** torch.arange(bits), persistent=False)
        self.usage = _UsageCounter(2**bits)

    def codebook_sizes(self) -> list[int]:
        return [2**self.bits]

    def _codes(self, signs: Tensor) -> Tensor:
        return ((signs > 0).long() * self.powers).sum(-1)

    def forward(self, z: Tensor) -> BottleneckOutput:
        _check_latents(z, self.dim)
        with torch.autocast(z.device.type, enabled=False):
            x = _channels_last(_project(self.project_in, z.float()))
            signs = torch.where(x > 0, 1.0, -1.0)
            quantized = x + (signs - x).detach()
            commitment = F.mse_loss(x, signs)
            per_sample, batch = lfq_entropies(x, self.temperature)
            loss = self.commitment_weight * commitment + self.entropy_weight * (
                per_sample - self.diversity * batch
            )
            out = _project(self.project_out, _channels_first(quantized))
        codes = self._codes(signs)
        counts = self.usage.add(codes)
        stats = {
            "commit_loss": commitment.detach(),
            "sample_entropy": per_sample.detach(),
            "batch_entropy": batch.detach(),
            "perplexity": _perplexity(counts),
            "usage": (counts > 0).float().mean(),
        }
        return BottleneckOutput(z=out.to(z.dtype), loss=loss, codes=codes, stats=stats)

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        _check_latents(z, self.dim)
        with torch.autocast(z.device.type, enabled=False):
            codes = self._codes(_channels_last(_project(self.project_in, z.float())))
        self.usage.add(codes)
        return codes

    def decode(self, codes: Tensor) -> Tensor:
        signs = ((codes[..., None] >> torch.arange(self.bits, device=codes.device)) & 1).float() * 2 - 1
        return _project(self.project_out, _channels_first(signs))

    def reset_usage(self) -> None:
        self.usage.counts.zero_()

    def usage_stats(self) -> dict[str, float]:
        return usage_from_counts(self.usage.counts)
