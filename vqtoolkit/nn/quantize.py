"""Vector quantisation bottlenecks: VQ-VAE with an EMA codebook, k-means init and dead-code restarts,
and residual VQ built from a stack of them.

Latents are channel-first, (B, D, *grid) with a grid of rank 1, 2 or 3 (speech, images, video).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import pack, rearrange, unpack
from torch import Tensor, nn

from vqtoolkit.nn.base import Bottleneck, BottleneckOutput

_DISTANCE_CHUNK_FLOATS = 2**22  # automatic chunking keeps each (rows x K) distance block below this


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum over all ranks in place; a no-op outside torch.distributed."""
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _broadcast(tensor: Tensor, src: int = 0) -> Tensor:
    """Copy rank `src`'s tensor to every rank in place; a no-op outside torch.distributed."""
    if _distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def _perplexity(counts: Tensor) -> Tensor:
    """exp(entropy) of the normalised counts: the effective number of codes in use (0 for no counts)."""
    total = counts.sum()
    probs = counts / total.clamp(min=1)
    perplexity = torch.exp(-torch.special.xlogy(probs, probs).sum())
    return torch.where(total > 0, perplexity, torch.zeros_like(perplexity))


def _check_latents(z: Tensor, dim: int) -> None:
    if z.ndim not in (3, 4, 5) or z.shape[1] != dim:
        raise ValueError(f"expected latents (B, {dim}, *grid) with a grid of rank 1-3, got {tuple(z.shape)}")


def _flatten(z: Tensor) -> tuple[Tensor, list]:
    """(B, D, *grid) -> (N, D) rows, plus what `unpack` needs to restore the grid."""
    flat, packed_shape = pack([rearrange(z, "b d ... -> b ... d")], "* d")
    return flat, packed_shape


def _unflatten(flat: Tensor, packed_shape: list) -> Tensor:
    """(N, D) rows -> (B, D, *grid)."""
    [channel_last] = unpack(flat, packed_shape, "* d")
    return rearrange(channel_last, "b ... d -> b d ...")


def _straight_through(quantized: Tensor, z: Tensor) -> Tensor:
    # Value is exactly `quantized` (z - z.detach() is exactly zero, even in bf16), the gradient passes to z
    # unchanged: the same straight-through estimator as z + (e - z).detach(), without its rounding.
    return quantized.detach() + (z - z.detach())


class VectorQuantizer(Bottleneck):
    """VQ-VAE bottleneck: nearest-neighbour lookup in a codebook of K vectors, straight-through gradients.

    Args:
        dim: latent channels D, the length of each code vector.
        codebook_size: number of codes K.
        beta: weight of the commitment loss ||z_e - sg[e]||^2.
        ema: update the codebook by exponential moving averages instead of the VQ loss gradient.
        decay: EMA decay gamma.
        eps: Laplace smoothing of the EMA counts, so no code divides by zero.
        kmeans_init: set the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations for the k-means init.
        dead_code_steps: re-seed codes unused for this many consecutive training steps (0 = off).
        chunk_size: rows per distance chunk (0 = automatic, so rows * K stays below ~2**22 floats).

    Without kmeans_init the codebook starts uniform in (-1/K, 1/K), as in the VQ-VAE reference code.
    Usage counts (`usage_stats`) are local to each rank.
    """

    discrete = True

    def __init__(
        self,
        dim: int,
        codebook_size: int = 512,
        beta: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        dead_code_steps: int = 0,
        chunk_size: int = 0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.beta = beta
        self.ema = ema
        self.decay = decay
        self.eps = eps
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.dead_code_steps = dead_code_steps
        self.chunk_size = chunk_size

        codebook = torch.empty(codebook_size, dim).uniform_(-1 / codebook_size, 1 / codebook_size)
        if ema:
            self.register_buffer("codebook", codebook)
        else:
            self.codebook = nn.Parameter(codebook)
        # m_i / N_i == e_i from the start, so codes never hit before the first update keep their vectors
        self.register_buffer("ema_count", torch.ones(codebook_size))
        self.register_buffer("ema_sum", codebook.clone())
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.long))
        usage_counts = torch.zeros(codebook_size, dtype=torch.float64)
        self.register_buffer("usage_counts", usage_counts, persistent=False)

    def codebook_sizes(self) -> list[int]:
        return [self.codebook_size]

    # --- nearest neighbour -------------------------------------------------------------------------------

    def _nearest(self, flat: Tensor, codebook: Tensor) -> Tensor:
        """Index of the nearest code (L2) for each row of `flat` (N, D), computed in fp32 chunk by chunk."""
        with torch.no_grad(), torch.autocast(device_type=flat.device.type, enabled=False):
            rows = flat.float()
            codebook = codebook.float()
            codebook_sq_norm = codebook.pow(2).sum(dim=1)
            codebook_t = codebook.t()
            chunk_rows = self.chunk_size or max(1, _DISTANCE_CHUNK_FLOATS // codebook.shape[0])
            codes = torch.empty(rows.shape[0], dtype=torch.long, device=rows.device)
            for start in range(0, rows.shape[0], chunk_rows):
                chunk = rows[start : start + chunk_rows]
                # ||x - e||^2 = ||x||^2 - 2 x.e + ||e||^2; ||x||^2 is the same for every code, so skip it
                distances = torch.addmm(codebook_sq_norm, chunk, codebook_t, beta=1, alpha=-2)
                codes[start : start + chunk_rows] = distances.argmin(dim=1)
        return codes

    # --- codebook maintenance (training only, no grad) ---------------------------------------------------

    def _cluster_sums(self, rows: Tensor, codes: Tensor) -> Tensor:
        """Per-code sums of the rows assigned to it, over all ranks: sum_j z_ij."""
        return _all_reduce_sum(torch.zeros_like(self.ema_sum).index_add_(0, codes, rows))

    @torch.no_grad()
    def _init_by_kmeans(self, flat: Tensor) -> None:
        rows = flat.detach().float()
        num_rows, num_codes = rows.shape[0], self.codebook_size
        if num_rows >= num_codes:
            start = torch.randperm(num_rows, device=rows.device)[:num_codes]
        else:
            start = torch.randint(num_rows, (num_codes,), device=rows.device)
        centroids = _broadcast(rows[start].contiguous())
        for _ in range(self.kmeans_iters):
            codes = self._nearest(rows, centroids)
            counts = _all_reduce_sum(torch.bincount(codes, minlength=num_codes).float())
            sums = self._cluster_sums(rows, codes)
            # an empty cluster keeps its centroid
            centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
        _broadcast(centroids)
        self.codebook.data.copy_(centroids)
        self.ema_sum.copy_(centroids)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, rows: Tensor, codes: Tensor, counts: Tensor) -> None:
        """One EMA step; `counts` are the global n_i."""
        sums = self._cluster_sums(rows, codes)
        # N_i <- g N_i + (1 - g) n_i ;  m_i <- g m_i + (1 - g) sum_j z_ij ;  e_i = m_i / N_i
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.codebook_size * self.eps) * total
        self.codebook.copy_(self.ema_sum / smoothed[:, None])

    @torch.no_grad()
    def _restart_dead_codes(self, rows: Tensor, counts: Tensor) -> Tensor:
        """Re-seed codes unused for `dead_code_steps` steps (`counts` are global) from random batch rows."""
        self.steps_unused.add_(1).mul_(counts == 0)
        dead = self.steps_unused >= self.dead_code_steps
        # Drawing a candidate for every code and selecting with `where` avoids a host sync on dead.any().
        candidates = rows[torch.randint(rows.shape[0], (self.codebook_size,), device=rows.device)]
        candidates = _broadcast(candidates.float().contiguous())
        dead_rows = dead[:, None]
        self.codebook.data.copy_(torch.where(dead_rows, candidates, self.codebook))
        self.ema_sum.copy_(torch.where(dead_rows, candidates, self.ema_sum))
        self.ema_count.masked_fill_(dead, 1.0)
        self.steps_unused.masked_fill_(dead, 0)
        return dead.sum()

    # --- public API ----------------------------------------------------------------------------------------

    def forward(self, z: Tensor) -> BottleneckOutput:
        _check_latents(z, self.dim)
        flat, packed_shape = _flatten(z)
        if self.training and not self.initialized:
            self._init_by_kmeans(flat)

        flat_fp32 = flat.float()
        codes = self._nearest(flat_fp32, self.codebook)
        counts = torch.bincount(codes, minlength=self.codebook_size)
        self.usage_counts += counts

        quantized = F.embedding(codes, self.codebook)  # fp32 (N, D)
        commit_loss = F.mse_loss(flat_fp32, quantized.detach())
        if self.ema:
            vq_loss = commit_loss.detach()  # same value; the codebook learns by EMA, not by this loss
            loss = self.beta * commit_loss
        else:
            vq_loss = F.mse_loss(quantized, flat_fp32.detach())
            loss = vq_loss + self.beta * commit_loss

        stats = {
            "vq_loss": vq_loss.detach(),
            "commit_loss": commit_loss.detach(),
            "perplexity": _perplexity(counts.float()),
            "usage": (counts > 0).float().mean(),
        }
        if self.training and (self.ema or self.dead_code_steps > 0):
            rows = flat_fp32.detach()
            global_counts = _all_reduce_sum(counts.float())
            if self.ema:
                self._ema_update(rows, codes, global_counts)
            if self.dead_code_steps > 0:
                stats["restarts"] = self._restart_dead_codes(rows, global_counts)

        z_q = _straight_through(_unflatten(quantized, packed_shape).to(z.dtype), z)
        [grid_codes] = unpack(codes, packed_shape, "*")
        return BottleneckOutput(z=z_q, loss=loss, codes=grid_codes, stats=stats)

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """Latents (B, D, *grid) -> codes (B, *grid) int64."""
        _check_latents(z, self.dim)
        flat, packed_shape = _flatten(z)
        codes = self._nearest(flat, self.codebook)
        self.usage_counts += torch.bincount(codes, minlength=self.codebook_size)
        [grid_codes] = unpack(codes, packed_shape, "*")
        return grid_codes

    def decode(self, codes: Tensor) -> Tensor:
        """Codes (B, *grid) -> code vectors (B, D, *grid)."""
        return rearrange(F.embedding(codes, self.codebook), "b ... d -> b d ...")

    def reset_usage(self) -> None:
        self.usage_counts.zero_()

    def usage_stats(self) -> dict[str, float]:
        """Code usage accumulated by every forward/encode since the last `reset_usage`."""
        return {
            "used_fraction": (self.usage_counts > 0).double().mean().item(),
            "perplexity": _perplexity(self.usage_counts).item(),
        }


class ResidualVQ(Bottleneck):
    """Residual VQ: each quantizer codes what the previous ones left; the decoder sees their sum.

    Args:
        dim: latent channels D, the length of each code vector.
        num_quantizers: number of stacked quantizers Q.
        codebook_size: number of codes K in each quantizer.
        beta: weight of the commitment loss in each quantizer.
        ema: update the codebooks by exponential moving averages instead of the VQ loss gradient.
        decay: EMA decay gamma.
        eps: Laplace smoothing of the EMA counts.
        kmeans_init: set each codebook by k-means on its residuals of the first training batch.
        kmeans_iters: Lloyd iterations for the k-means init.
        dead_code_steps: re-seed codes unused for this many consecutive training steps (0 = off).
        chunk_size: rows per distance chunk (0 = automatic).

    `decode` also accepts fewer than Q code levels (a coarser reconstruction).
    """

    discrete = True

    def __init__(
        self,
        dim: int,
        num_quantizers: int = 4,
        codebook_size: int = 512,
        beta: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        dead_code_steps: int = 0,
        chunk_size: int = 0,
    ) -> None:
        super().__init__()
        self.dim = dim
        quantizer_args = dict(
            codebook_size=codebook_size, beta=beta, ema=ema, decay=decay, eps=eps, kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters, dead_code_steps=dead_code_steps, chunk_size=chunk_size,
        )  # fmt: skip
        self.layers = nn.ModuleList(VectorQuantizer(dim, **quantizer_args) for _ in range(num_quantizers))

    def codebook_sizes(self) -> list[int]:
        return [layer.codebook_size for layer in self.layers]

    def forward(self, z: Tensor) -> BottleneckOutput:
        _check_latents(z, self.dim)
        # residuals in fp32 so the sum matches `decode` exactly whatever the input dtype
        residual = z.float()
        quantized_sum = torch.zeros_like(residual)
        losses, codes, layer_stats = [], [], []
        for layer in self.layers:
            out = layer(residual)
            quantized = out.z.detach()
            residual = residual - quantized
            quantized_sum = quantized_sum + quantized
            losses.append(out.loss)
            codes.append(out.codes)
            layer_stats.append(out.stats)

        summed_keys = [key for key in ("vq_loss", "commit_loss", "restarts") if key in layer_stats[0]]
        stats = {key: torch.stack([s[key] for s in layer_stats]).sum() for key in summed_keys}
        for key in ("perplexity", "usage"):
            stats[key] = torch.stack([s[key] for s in layer_stats]).mean()
            stats |= {f"{key}/q{index}": s[key] for index, s in enumerate(layer_stats)}
        return BottleneckOutput(
            z=_straight_through(quantized_sum.to(z.dtype), z),
            loss=torch.stack(losses).sum(),
            codes=rearrange(codes, "q b ... -> b q ..."),
            stats=stats,
        )

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """Latents (B, D, *grid) -> codes (B, Q, *grid) int64."""
        _check_latents(z, self.dim)
        residual = z.float()
        codes = []
        for layer in self.layers:
            layer_codes = layer.encode(residual)
            residual = residual - layer.decode(layer_codes)
            codes.append(layer_codes)
        return rearrange(codes, "q b ... -> b q ...")

    def decode(self, codes: Tensor) -> Tensor:
        """Codes (B, Q', *grid) with Q' <= Q -> summed code vectors (B, D, *grid)."""
        if codes.shape[1] > len(self.layers):
            raise ValueError(f"got {codes.shape[1]} code levels, this ResidualVQ has {len(self.layers)}")
        decoded = torch.zeros((), device=codes.device)
        for layer, layer_codes in zip(self.layers, rearrange(codes, "b q ... -> q b ...")):
            decoded = decoded + layer.decode(layer_codes)
        return decoded

    def reset_usage(self) -> None:
        for layer in self.layers:
            layer.reset_usage()

    def usage_stats(self) -> dict[str, float]:
        """Usage averaged over quantizers, plus each quantizer's as `used_fraction/q0`, `perplexity/q0`..."""
        per_layer = [layer.usage_stats() for layer in self.layers]
        stats = {key: sum(s[key] for s in per_layer) / len(per_layer) for key in per_layer[0]}
        for index, layer_stats in enumerate(per_layer):
            stats |= {f"{key}/q{index}": value for key, value in layer_stats.items()}
        return stats
