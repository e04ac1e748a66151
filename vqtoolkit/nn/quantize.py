"""Vector quantisation bottlenecks: VQ-VAE with an EMA codebook, k-means init and dead-code restarts,
and residual VQ built from a stack of them.

Latents are channel-first, (B, D, *grid) with a grid of rank 1, 2 or 3 (speech, images, video).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from vqtoolkit.nn.base import Bottleneck, BottleneckOutput
from vqtoolkit.ranges import BETA, COUNT, FRACTION, NOT_NEGATIVE, POSITIVE, Range

# automatic chunking keeps each (rows x K) distance block below this many floats: 16 MB blocks measured
# fastest on a CPU (larger ones fall out of cache); on a GPU fewer, larger blocks mean fewer kernel launches
_DISTANCE_CHUNK_FLOATS = {"cpu": 2**22, "cuda": 2**26}
# on CPU, chunks of at most this many rows: a small codebook's search is fastest with blocks that stay in
# cache (measured: 2,048 rows at K = 512 and 1,024, 512 at K = 8,192, benchmarks/quantizer.py)
_CHUNK_ROWS = {"cpu": 2048}
# under a run of fixed length, the codebook EMA's horizon 1 / (1 - decay) is at most the run's length over
# EMA_RUN_PARTS, the usage average's at most over USAGE_RUN_PARTS, and either decay at least MIN_DECAY
EMA_RUN_PARTS, USAGE_RUN_PARTS, MIN_DECAY = 5, 10, 0.8


def run_decay(decay: float, steps: int, parts: int = EMA_RUN_PARTS) -> float:
    """An EMA's `decay` for a run of `steps` steps, so that it averages over at most 1 / `parts` of the
    run, and over 5 steps at the least. An EMA averages over about 1 / (1 - decay) steps (100 at 0.99):
    over a whole short run a codebook's could not follow the encoder's moving latents, and the codes that
    lag behind go unused on new data; a usage average that long would find codes that die only late."""
    return min(decay, max(MIN_DECAY, 1 - parts / steps))


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


def _row_span(num_rows: int, device: torch.device) -> tuple[int, int]:
    """(first, total): where this rank's rows sit among all ranks' rows taken in rank order; (0, num_rows)
    outside torch.distributed. With data parallelism that order is the combined batch's."""
    if not _distributed():
        return 0, num_rows
    sizes = torch.zeros(dist.get_world_size(), dtype=torch.long, device=device)
    sizes[dist.get_rank()] = num_rows
    sizes = _all_reduce_sum(sizes).tolist()
    return sum(sizes[: dist.get_rank()]), sum(sizes)


def _pick_rows(rows: Tensor, indices: Tensor, first: int) -> Tensor:
    """The vectors x of rows [x, 1] at `indices` among all ranks' rows (see `_row_span`), on every rank.

    Every rank draws the same indices (same seed, same draws), fills in the ones among its own rows and
    a sum over ranks completes them: the very rows one process would pick from the combined batch.
    """
    if not _distributed():
        return rows[indices, :-1]
    local = indices - first
    inside = ((local >= 0) & (local < rows.shape[0]))[:, None]
    picked = rows[local.clamp(0, rows.shape[0] - 1), :-1]
    return _all_reduce_sum(torch.where(inside, picked, torch.zeros_like(picked)))


def _perplexity(counts: Tensor) -> Tensor:
    """exp(entropy) of the normalised counts: the effective number of codes in use (0 for no counts)."""
    total = counts.sum()
    probs = counts / total.clamp(min=1)
    perplexity = torch.exp(-torch.special.xlogy(probs, probs).sum())
    return torch.where(total > 0, perplexity, torch.zeros_like(perplexity))


def usage_from_counts(counts: Tensor) -> dict[str, float]:
    """Fraction of the codes used at least once, and the perplexity of their usage."""
    return {"used_fraction": (counts > 0).double().mean().item(), "perplexity": _perplexity(counts).item()}


def staged_usage(per_stage: list[dict[str, float]]) -> dict[str, float]:
    """The stages' usage statistics averaged, plus each stage's as `used_fraction/q0`, `perplexity/q0`..."""
    stats = {key: sum(s[key] for s in per_stage) / len(per_stage) for key in per_stage[0]}
    for index, stage_stats in enumerate(per_stage):
        stats |= {f"{key}/q{index}": value for key, value in stage_stats.items()}
    return stats


def _check_latents(z: Tensor, dim: int) -> None:
    if z.ndim not in (3, 4, 5) or z.shape[1] != dim:
        raise ValueError(f"expected latents (B, {dim}, *grid) with a grid of rank 1-3, got {tuple(z.shape)}")


def _rows(vectors: Tensor) -> Tensor:
    """Vectors (..., D) of any dtype -> fp32 rows (N, D + 1) = [x, 1], in one copy, outside autograd.

    The trailing 1 lets one matrix product with [-2 e, ||e||^2] give ||e||^2 - 2 x.e without a separate
    bias pass, and one index_add give each code's sum of vectors and its count together.
    """
    *lead, dim = vectors.shape
    rows = vectors.new_empty(*lead, dim + 1, dtype=torch.float32)
    with torch.no_grad():
        rows[..., :dim] = vectors
    rows[..., dim] = 1
    return rows.view(-1, dim + 1)


def codebook_rows(codebook: Tensor) -> Tensor:
    """(D + 1, K) fp32 = [-2 e, ||e||^2]^T: `_rows(x) @ codebook_rows(E)` is ||x - e||^2 - ||x||^2 for every
    code, the same for all codes of one x, so its minimum is the nearest code."""
    codebook = codebook.float()
    return torch.cat([-2 * codebook, codebook.pow(2).sum(dim=1, keepdim=True)], dim=1).t()


def _latent_rows(z: Tensor) -> Tensor:
    """Latents (B, D, *grid) -> fp32 rows (N, D + 1) = [z_n, 1]."""
    return _rows(rearrange(z, "b d ... -> b ... d"))


def _channel_first(rows: Tensor, shape: torch.Size) -> Tensor:
    """(N, D) rows -> a (B, D, *grid) view for latents of `shape`."""
    return rearrange(rows.view(shape[0], *shape[2:], shape[1]), "b ... d -> b d ...")


def _straight_through(quantized: Tensor, z: Tensor) -> Tensor:
    # Value is exactly `quantized` (z - z.detach() is exactly zero, even in bf16), the gradient passes to z
    # unchanged: the same straight-through estimator as z + (e - z).detach(), without its rounding.
    return quantized.detach() + (z - z.detach())


def rotate_to(z: Tensor, target: Tensor) -> Tensor:
    """`target`'s value, with z's gradient passed through the rotation and scaling that take each vector of
    z (channel dim 1) to its target: R = I - 2 r r^T + 2 t e^T for unit e = z / |z|, t = target / |target|,
    r = (e + t) / |e + t|, times |target| / |z|, all held constant (the rotation trick)."""
    with torch.no_grad():
        e, t = F.normalize(z.float(), dim=1), F.normalize(target.float(), dim=1)
        r = F.normalize(e + t, dim=1)
        scale = target.float().norm(dim=1, keepdim=True) / z.float().norm(dim=1, keepdim=True).clamp(
            min=1e-12
        )
    x = z.float()
    rotated = x - 2 * r * (r * x).sum(1, keepdim=True) + 2 * t * (e * x).sum(1, keepdim=True)
    rotated = scale * rotated
    return (rotated + (target.float() - rotated).detach()).to(z.dtype)


class _Quantize(torch.autograd.Function):
    """The codes' vectors e_k laid out like z, with the gradient passed straight to z, and the commitment
    loss mean((z - sg[e_k])^2); backward adds its gradient 2 (z - e_k) / numel in the same single pass."""

    @staticmethod
    def forward(ctx, z: Tensor, rows: Tensor, codes: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
        quantized = F.embedding(codes, codebook)  # fp32 (N, D)
        residual = rows[:, :-1] - quantized
        ctx.save_for_backward(residual)
        ctx.shape = z.shape
        commit_loss = torch.linalg.vector_norm(residual).square() / residual.numel()
        return _channel_first(quantized, z.shape).to(z.dtype), commit_loss

    @staticmethod
    def backward(ctx, grad_z_q: Tensor, grad_commit: Tensor) -> tuple[Tensor | None, ...]:
        (residual,) = ctx.saved_tensors
        # in the layout of the incoming gradient (channel-first, as a decoder sends it back), so that the
        # result needs no copy to match z; the residual is read through a view
        scale = 2 * grad_commit / residual.numel()
        grad = torch.addcmul(grad_z_q, _channel_first(residual, ctx.shape), scale)
        return grad.to(grad_z_q.dtype), None, None, None


class VectorQuantizer(Bottleneck):
    """VQ-VAE bottleneck: nearest-neighbour lookup in a codebook of K vectors, straight-through gradients.

    Args:
        dim: latent channels D, the length of each code vector.
        codebook_size: number of codes K.
        beta: weight of the commitment loss ||z_e - sg[e]||^2.
        ema: update the codebook by exponential moving averages instead of the VQ loss gradient.
        decay: EMA decay gamma; the trainer lowers it for a short run (see `fit_to_run`).
        eps: Laplace smoothing of the EMA counts, so no code divides by zero.
        kmeans_init: set the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations for the k-means init.
        dead_code_steps: re-seed codes unused for this many consecutive training steps (0 = off).
        dead_code_threshold: re-seed, every step, the codes whose usage (their share of the rows, averaged
            by an EMA of decay `usage_decay`) is below this fraction of a uniform share 1 / K (0 = off).
        usage_decay: the decay of that usage average (0.9: about the last 10 steps); the trainer lowers
            it for a short run, to a tenth of the run (see `fit_to_run`).
        restart_pool: recent latents kept to re-seed dead codes from (0 = twice the codebook): a quarter
            of it is renewed from each training batch, so a small batch still gives varied new codes.
        chunk_size: rows per distance chunk (0 = automatic: rows * K below 2**22 floats, 2**26 on CUDA).
        code_dim: factorized codes (ViT-VQGAN, DAC): look up in a learnt projection to this many channels
            and project the code back to D; 0 = look up in D itself.
        normalize: l2-normalise the (projected) latents and the codes, so the nearest code is the
            cosine-nearest one; with a small `code_dim` this keeps large codebooks in use.
        gradient: how the decoder's gradient reaches the encoder through the lookup: "ste" copies it
            (straight-through), "rotation" passes it through the rotation and rescaling that take the
            latent to its code (the rotation trick, Fifty et al. 2024), so latents in one code's cell get
            different gradients by where they lie.

    Without kmeans_init the codebook starts uniform in (-1/K, 1/K), as in the VQ-VAE reference code.
    Under torch.distributed (data parallel training), the EMA sums and counts, the k-means init and the
    dead-code restarts all use every rank's latents: each rank holds the codebook one process would have
    on the combined batch. Usage counts (`usage_stats`) and the stats of `forward` are local to each rank.
    """

    discrete = True
    optional_state = ("usage_share", "pool", "pool_filled")  # dead-code restarts' own; see load_model

    def __init__(
        self,
        dim: int,
        codebook_size: Annotated[int, Range(1, 2**24)] = 512,
        beta: Annotated[float, NOT_NEGATIVE] = 0.25,
        ema: bool = True,
        decay: Annotated[float, BETA] = 0.99,
        eps: Annotated[float, POSITIVE] = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: Annotated[int, COUNT] = 10,
        dead_code_steps: Annotated[int, NOT_NEGATIVE] = 0,
        chunk_size: Annotated[int, NOT_NEGATIVE] = 0,
        code_dim: Annotated[int, Range(0, 2**20)] = 0,
        normalize: bool = False,
        gradient: Literal["ste", "rotation"] = "ste",
        dead_code_threshold: Annotated[float, NOT_NEGATIVE] = 0.0,
        usage_decay: Annotated[float, BETA] = 0.9,
        restart_pool: Annotated[int, Range(0, 2**24)] = 0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.normalize = normalize
        self.gradient = gradient
        self.project_in = nn.Linear(dim, code_dim) if code_dim else None
        self.project_out = nn.Linear(code_dim, dim) if code_dim else None
        lookup_dim = code_dim or dim
        self.codebook_size = codebook_size
        self.beta = beta
        self.ema = ema
        self.decay = decay
        self.eps = eps
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.dead_code_steps = dead_code_steps
        self.dead_code_threshold, self.usage_decay = dead_code_threshold, usage_decay
        self.chunk_size = chunk_size

        codebook = torch.empty(codebook_size, lookup_dim).uniform_(-1 / codebook_size, 1 / codebook_size)
        if normalize:
            codebook = F.normalize(codebook, dim=1)
        if ema:
            self.register_buffer("codebook", codebook)
        else:
            self.codebook = nn.Parameter(codebook)
        # m_i / N_i == e_i from the start, so codes never hit before the first update keep their vectors
        self.register_buffer("ema_count", torch.ones(codebook_size))
        self.register_buffer("ema_sum", codebook.clone())
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.long))
        if dead_code_threshold > 0:
            # each code's EMA share of the rows, starting uniform
            self.register_buffer("usage_share", torch.full((codebook_size,), 1.0 / codebook_size))
        if dead_code_threshold > 0 or dead_code_steps > 0:
            pool = restart_pool or 2 * codebook_size
            self.register_buffer("pool", torch.zeros(pool, lookup_dim))
            self.register_buffer("pool_filled", torch.zeros((), dtype=torch.long))  # rows written so far
        usage_counts = torch.zeros(codebook_size, dtype=torch.float64)
        self.register_buffer("usage_counts", usage_counts, persistent=False)

    def codebook_sizes(self) -> list[int]:
        return [self.codebook_size]

    def fit_to_run(self, steps: int) -> dict[str, float]:
        before = {"decay": self.decay, "usage_decay": self.usage_decay}
        self.decay = run_decay(self.decay, steps)
        self.usage_decay = run_decay(self.usage_decay, steps, USAGE_RUN_PARTS)
        return {key: getattr(self, key) for key, value in before.items() if getattr(self, key) != value}

    # --- nearest neighbour -------------------------------------------------------------------------------

    def _nearest(self, rows: Tensor, codebook: Tensor) -> Tensor:
        """Index of the nearest code (L2) for each fp32 row [x, 1] of `rows` (N, D + 1), chunk by chunk."""
        with torch.no_grad(), torch.autocast(device_type=rows.device.type, enabled=False):
            distance_rows = codebook_rows(codebook)
            num_rows = rows.shape[0]
            block_floats = _DISTANCE_CHUNK_FLOATS.get(rows.device.type, 2**22)
            automatic = min(block_floats // codebook.shape[0], _CHUNK_ROWS.get(rows.device.type, num_rows))
            chunk_rows = max(1, min(num_rows, self.chunk_size or automatic))
            # one distance block for every chunk; min with indices is much faster than argmin on CPU
            distances = rows.new_empty(chunk_rows, codebook.shape[0])
            nearest = rows.new_empty(chunk_rows)
            codes = torch.empty(num_rows, dtype=torch.long, device=rows.device)
            for start in range(0, num_rows, chunk_rows):
                end = min(start + chunk_rows, num_rows)
                block = torch.mm(rows[start:end], distance_rows, out=distances[: end - start])
                torch.min(block, dim=1, out=(nearest[: end - start], codes[start:end]))
        return codes

    # --- codebook maintenance (training only, no grad) ---------------------------------------------------

    def _cluster_sums(self, rows: Tensor, codes: Tensor) -> Tensor:
        """Per-code sums of the rows [x, 1] assigned to it: (K, D + 1) = [sum_j z_ij, n_i], this rank's."""
        return rows.new_zeros(self.codebook_size, rows.shape[1]).index_add_(0, codes, rows)

    @torch.no_grad()
    def _init_by_kmeans(self, rows: Tensor) -> None:
        first, num_rows = _row_span(rows.shape[0], rows.device)  # all ranks' rows, so all agree
        num_codes = self.codebook_size
        if num_rows >= num_codes:
            start = torch.randperm(num_rows, device=rows.device)[:num_codes]
        else:
            start = torch.randint(num_rows, (num_codes,), device=rows.device)
        centroids = _pick_rows(rows, start, first).contiguous()
        for _ in range(self.kmeans_iters):
            codes = self._nearest(rows, centroids)
            sums = _all_reduce_sum(self._cluster_sums(rows, codes))
            counts = sums[:, -1:]
            # an empty cluster keeps its centroid
            centroids = torch.where(counts > 0, sums[:, :-1] / counts.clamp(min=1), centroids)
        _broadcast(centroids)
        if self.normalize:
            centroids = F.normalize(centroids, dim=1)
        self.codebook.data.copy_(centroids)
        self.ema_sum.copy_(centroids)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, sums: Tensor, counts: Tensor) -> None:
        """One EMA step from the global per-code sums sum_j z_ij and counts n_i."""
        # N_i <- g N_i + (1 - g) n_i ;  m_i <- g m_i + (1 - g) sum_j z_ij ;  e_i = m_i / N_i
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.codebook_size * self.eps) * total
        codebook = self.ema_sum / smoothed[:, None]
        self.codebook.copy_(F.normalize(codebook, dim=1) if self.normalize else codebook)

    @torch.no_grad()
    def _renew_pool(self, rows: Tensor) -> None:
        """Write a quarter of the pool's rows with random latents of the (combined) batch, oldest first."""
        first, num_rows = _row_span(rows.shape[0], rows.device)
        size = self.pool.shape[0]
        count = min(num_rows, max(1, size // 4))
        fresh = _pick_rows(rows, torch.randint(num_rows, (count,), device=rows.device), first)
        positions = (self.pool_filled + torch.arange(count, device=rows.device)) % size
        self.pool[positions] = fresh
        self.pool_filled.add_(count)

    @torch.no_grad()
    def _restart_dead_codes(self, rows: Tensor, counts: Tensor) -> Tensor:
        """Re-seed the dead codes (see `dead_code_steps`, `dead_code_threshold`; `counts` are global) from
        random recent latents."""
        self.steps_unused.add_(1).mul_(counts == 0)
        dead = torch.zeros_like(counts, dtype=torch.bool)
        if self.dead_code_steps > 0:
            dead |= self.steps_unused >= self.dead_code_steps
        if self.dead_code_threshold > 0:
            share = counts / counts.sum().clamp(min=1)
            self.usage_share.mul_(self.usage_decay).add_(share, alpha=1 - self.usage_decay)
            dead |= self.usage_share < self.dead_code_threshold / self.codebook_size
            # a re-seeded code starts afresh
            self.usage_share.masked_fill_(dead, 1.0 / self.codebook_size)
        self._renew_pool(rows)
        # Drawing a candidate for every code and selecting with `where` avoids a host sync on dead.any().
        filled = self.pool_filled.clamp(max=self.pool.shape[0])
        picks = (torch.rand(self.codebook_size, device=rows.device) * filled).long()
        candidates = self.pool[picks]
        dead_rows = dead[:, None]
        self.codebook.data.copy_(torch.where(dead_rows, candidates, self.codebook))
        self.ema_sum.copy_(torch.where(dead_rows, candidates, self.ema_sum))
        self.ema_count.masked_fill_(dead, 1.0)
        self.steps_unused.masked_fill_(dead, 0)
        return dead.sum()

    # --- public API ----------------------------------------------------------------------------------------

    def _lookup_space(self, z: Tensor) -> Tensor:
        """Latents (B, D, *grid) -> what the codebook is searched with: projected and normalised if asked."""
        if self.project_in is not None:
            z = rearrange(self.project_in(rearrange(z, "b d ... -> b ... d")), "b ... d -> b d ...")
        return F.normalize(z, dim=1) if self.normalize else z

    def _latent_space(self, vectors: Tensor) -> Tensor:
        if self.project_out is None:
            return vectors
        return rearrange(self.project_out(rearrange(vectors, "b d ... -> b ... d")), "b ... d -> b d ...")

    def _codebook(self) -> Tensor:
        # a codebook learnt by gradient drifts off the sphere between steps; the EMA one is kept on it
        return F.normalize(self.codebook, dim=1) if self.normalize and not self.ema else self.codebook

    def forward(self, z: Tensor) -> BottleneckOutput:
        _check_latents(z, self.dim)
        z = self._lookup_space(z)
        rows = _latent_rows(z)  # fp32 (N, D + 1) = [z_n, 1], outside autograd
        if self.training and not self.initialized:
            self._init_by_kmeans(rows)

        codes = self._nearest(rows, self._codebook())
        ema_step = self.training and self.ema
        if ema_step:  # this rank's sums and counts in one pass: the counts come from the rows' trailing 1
            sums = self._cluster_sums(rows, codes)
            counts = sums[:, -1].clone()
        else:
            counts = torch.bincount(codes, minlength=self.codebook_size).float()
        self.usage_counts += counts

        # from the codebook as it is before the EMA step below
        z_q, commit_loss = _Quantize.apply(z, rows, codes, self._codebook().detach())
        if self.gradient == "rotation":
            z_q = rotate_to(z, z_q.detach())
        if self.ema:
            vq_loss = commit_loss.detach()  # same value; the codebook learns by EMA, not by this loss
            loss = self.beta * commit_loss
        else:
            vq_loss = F.mse_loss(F.embedding(codes, self._codebook()), rows[:, :-1])
            loss = vq_loss + self.beta * commit_loss

        stats = {
            "vq_loss": vq_loss.detach(),
            "commit_loss": commit_loss.detach(),
            "perplexity": _perplexity(counts),
            "usage": (counts > 0).float().mean(),
        }
        restarting = self.dead_code_steps > 0 or self.dead_code_threshold > 0
        if self.training and (self.ema or restarting):
            if ema_step:
                sums = _all_reduce_sum(sums)
                global_counts = sums[:, -1]
                self._ema_update(sums[:, :-1], global_counts)
            else:
                global_counts = _all_reduce_sum(counts.clone())
            if restarting:
                stats["restarts"] = self._restart_dead_codes(rows, global_counts)
        codes = codes.view(z.shape[0], *z.shape[2:])
        return BottleneckOutput(z=self._latent_space(z_q), loss=loss, codes=codes, stats=stats)

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """Latents (B, D, *grid) -> codes (B, *grid) int64."""
        _check_latents(z, self.dim)
        z = self._lookup_space(z)
        codes = self._nearest(_latent_rows(z), self._codebook())
        self.usage_counts += torch.bincount(codes, minlength=self.codebook_size)
        return codes.view(z.shape[0], *z.shape[2:])

    def decode(self, codes: Tensor) -> Tensor:
        """Codes (B, *grid) -> code vectors (B, D, *grid)."""
        return self._latent_space(rearrange(F.embedding(codes, self._codebook()), "b ... d -> b d ..."))

    def reset_usage(self) -> None:
        self.usage_counts.zero_()

    def usage_stats(self) -> dict[str, float]:
        """Code usage accumulated by every forward/encode since the last `reset_usage`."""
        return usage_from_counts(self.usage_counts)


def quantizer_dropout_mask(batch: int, stages: int, probability: float, device) -> Tensor:
    """(B, Q) 0/1: with `probability`, an example keeps only its first n ~ U{1..Q} stages (SoundStream,
    DAC), so that decoding the first N stages alone works at every N; otherwise it keeps all of them."""
    kept = torch.randint(1, stages + 1, (batch,), device=device)
    kept = torch.where(torch.rand(batch, device=device) < probability, kept, stages)
    return (torch.arange(stages, device=device)[None] < kept[:, None]).float()


def stage_weight(mask: Tensor, stage: int, like: Tensor) -> Tensor:
    """Column `stage` of a (B, Q) mask, shaped to broadcast over `like` (B, ...)."""
    return mask[:, stage].view(-1, *[1] * (like.ndim - 1))


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
        code_dim: factorized codes in every quantizer (see VectorQuantizer); 0 = off.
        normalize: cosine lookup in every quantizer (see VectorQuantizer).
        gradient: "ste" or "rotation" in every quantizer (see VectorQuantizer).
        dead_code_threshold, usage_decay, restart_pool: dead-code restarts by usage in every quantizer
            (see VectorQuantizer).
        quantizer_dropout: probability that a training example keeps only its first n ~ U{1..Q}
            quantizers in the decoder's input, so that decoding the first N levels is good at every N
            (variable bitrate from one model, as SoundStream and DAC); every quantizer still codes and
            learns from every example's residual.

    `decode` also accepts fewer than Q code levels (a coarser reconstruction).
    """

    discrete = True
    residual = True

    def __init__(
        self,
        dim: int,
        num_quantizers: Annotated[int, Range(1, 256)] = 4,
        codebook_size: Annotated[int, Range(1, 2**24)] = 512,
        beta: Annotated[float, NOT_NEGATIVE] = 0.25,
        ema: bool = True,
        decay: Annotated[float, BETA] = 0.99,
        eps: Annotated[float, POSITIVE] = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: Annotated[int, COUNT] = 10,
        dead_code_steps: Annotated[int, NOT_NEGATIVE] = 0,
        chunk_size: Annotated[int, NOT_NEGATIVE] = 0,
        code_dim: Annotated[int, Range(0, 2**20)] = 0,
        normalize: bool = False,
        gradient: Literal["ste", "rotation"] = "ste",
        quantizer_dropout: Annotated[float, FRACTION] = 0.0,
        dead_code_threshold: Annotated[float, NOT_NEGATIVE] = 0.0,
        usage_decay: Annotated[float, BETA] = 0.9,
        restart_pool: Annotated[int, Range(0, 2**24)] = 0,
    ) -> None:
        super().__init__()
        if not 0 <= quantizer_dropout <= 1:
            raise ValueError(f"quantizer_dropout must be within [0, 1], not {quantizer_dropout}")
        self.dim = dim
        self.factorized = code_dim > 0
        self.quantizer_dropout = quantizer_dropout
        quantizer_args = dict(
            codebook_size=codebook_size, beta=beta, ema=ema, decay=decay, eps=eps, kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters, dead_code_steps=dead_code_steps, chunk_size=chunk_size,
            code_dim=code_dim, normalize=normalize, gradient=gradient,
            dead_code_threshold=dead_code_threshold, usage_decay=usage_decay, restart_pool=restart_pool,
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
        mask = None
        if self.training and self.quantizer_dropout > 0:
            mask = quantizer_dropout_mask(z.shape[0], len(self.layers), self.quantizer_dropout, z.device)
        for index, layer in enumerate(self.layers):
            out = layer(residual)
            quantized = out.z.detach()
            residual = residual - quantized
            # factorized layers keep their output's gradient: it trains their projections (as in DAC)
            stage = out.z.float() if self.factorized else quantized
            quantized_sum = quantized_sum + (
                stage if mask is None else stage * stage_weight(mask, index, stage)
            )
            losses.append(out.loss)
            codes.append(out.codes)
            layer_stats.append(out.stats)

        summed_keys = [key for key in ("vq_loss", "commit_loss", "restarts") if key in layer_stats[0]]
        stats = {key: torch.stack([s[key] for s in layer_stats]).sum() for key in summed_keys}
        for key in ("perplexity", "usage"):
            stats[key] = torch.stack([s[key] for s in layer_stats]).mean()
            stats |= {f"{key}/q{index}": s[key] for index, s in enumerate(layer_stats)}
        z_q = (
            quantized_sum.to(z.dtype) if self.factorized else _straight_through(quantized_sum.to(z.dtype), z)
        )
        return BottleneckOutput(
            z=z_q,
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
        return staged_usage([layer.usage_stats() for layer in self.layers])
