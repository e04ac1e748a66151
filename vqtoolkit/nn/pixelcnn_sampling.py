"""Sampling from a PixelCNN prior, naive or cached, and its likelihood.

The cached sampler is the Fast PixelCNN++ idea: every layer's output is kept on the grid and only what a new
position needs is computed. The stack of axis `a` depends only on positions strictly earlier along `a`, so
its whole slab (axes before `a` fixed, axes after it free: a frame, a row) is computed once, when the first
position of that slab is reached; the horizontal stack and the head run on one position per step.

Both samplers draw one `torch.multinomial` per position over the batch from softmax(logits / T) in float64,
so the same generator gives the same codes. The cached logits are the same computation on a smaller window,
equal to the full forward's up to float rounding (the convolutions may sum in another order): in float64
a draw flipping is practically impossible; in float32, rare (a probability within ~1e-7 of a boundary).

On CPU the cached sampler runs on one thread: its per-position tensors are tiny, and waking OpenMP threads
costs more than it saves (on a busy 2-core machine, 2 threads made it 40x slower).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

from vqtoolkit.nn.pixelcnn import PixelCNN


def _draw(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """(B, K) logits -> (B,) codes."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


class _Cache:
    """Every layer's activations over one grid, padded, filled in as positions are generated."""

    def __init__(self, model: PixelCNN, batch: int, grid: tuple[int, ...], labels: Tensor | None):
        self.model, self.grid, self.rank = model, grid, len(grid)
        weight = model.embed.weight
        layers = [layer for stack in model.stacks for layer in stack]
        self.half = layers[0].half
        self.front = max(max(layer.front for layer in layers), self.half)
        padded = [g + self.front + self.half for g in grid]
        channels = weight.shape[1]
        self.embedded = weight.new_zeros(batch, channels, *padded)
        # every layer's output, padded like the embedding; outer stacks' pre-activations feed the next stack
        self.outputs = [[weight.new_zeros(batch, channels, *padded) for _ in stack] for stack in model.stacks]
        self.pres = [[weight.new_zeros(batch, 2 * channels, *grid) for _ in s] for s in model.stacks[:-1]]
        self.biases = [[layer.class_bias(labels) for layer in stack] for stack in model.stacks]

    def _index(self, axis: int, x: tuple[int, ...], along: slice, padded: bool, widen: int = 0) -> tuple:
        """Index of stack `axis`'s slab at x: x before `axis`, `along` on it, the whole grid after it."""
        offset = self.front if padded else 0
        index = [slice(None), slice(None)]
        for a in range(self.rank):
            if a < axis:
                index.append(slice(x[a] + offset, x[a] + offset + 1))
            elif a == axis:
                index.append(along)
            else:
                index.append(slice(offset - widen, offset + self.grid[a] + widen))
        return tuple(index)

    def _run_stack(self, axis: int, x: tuple[int, ...]) -> Tensor:
        """Compute every layer of stack `axis` on its slab at x; returns the last layer's output there."""
        start = x[axis] + self.front
        slab = self._index(axis, x, slice(start, start + 1), padded=True)
        unpadded_slab = self._index(axis, x, slice(x[axis], x[axis] + 1), padded=False)
        inputs = self.embedded
        for i, layer in enumerate(self.model.stacks[axis]):
            along = slice(start - layer.front, start - layer.front + layer.span)
            window = inputs[self._index(axis, x, along, padded=True, widen=self.half)]
            below = self.pres[axis - 1][i][unpadded_slab] if axis > 0 else None
            out, pre = layer(window, below, self.biases[axis][i], inputs[slab])
            self.outputs[axis][i][slab] = out
            if axis < self.rank - 1:
                self.pres[axis][i][unpadded_slab] = pre
            inputs = self.outputs[axis][i]
        return out

    def logits(self, x: tuple[int, ...]) -> Tensor:
        """(B, K) logits at position x; every earlier position must have been recorded."""
        for axis in range(self.rank):
            if not any(x[axis + 1 :]):  # the first position of this stack's slab
                out = self._run_stack(axis, x)
        return rearrange(self.model.head(out), "b k" + " 1" * self.rank + " -> b k")

    def record(self, x: tuple[int, ...], codes: Tensor) -> None:
        """Store the embedding of the (B,) codes generated at x."""
        self.embedded[(slice(None), slice(None), *(i + self.front for i in x))] = self.model.embed(codes)


@torch.no_grad()
def sample(
    model: PixelCNN,
    shape: tuple[int, ...],
    temperature: float = 1.0,
    labels: Tensor | None = None,
    generator: torch.Generator | None = None,
    cached: bool = True,
) -> Tensor:
    """Codes (B, *grid) drawn position by position in raster order from softmax(logits / temperature).

    `cached=False` runs the whole model on the whole grid for every position (the reference); `cached=True`
    computes only what each position needs and draws the same codes for the same generator state.
    """
    batch, *grid = shape
    if len(grid) != model.rank or temperature <= 0:
        raise ValueError(f"need a grid of rank {model.rank} and temperature > 0, got {shape}, {temperature}")
    device = model.embed.weight.device
    codes = torch.zeros(shape, dtype=torch.long, device=device)
    model.check_inputs(codes, labels)
    was_training, threads = model.training, torch.get_num_threads()
    model.eval()
    if cached and device.type == "cpu":
        torch.set_num_threads(1)
    try:
        cache = _Cache(model, batch, tuple(grid), labels) if cached else None
        for x in itertools.product(*map(range, grid)):
            position = (slice(None), *x)
            logits = cache.logits(x) if cached else model(codes, labels)[(slice(None), slice(None), *x)]
            codes[position] = _draw(logits, temperature, generator)
            if cached:
                cache.record(x, codes[position])
    finally:
        model.train(was_training)
        torch.set_num_threads(threads)
    return codes


def negative_log_likelihood(model: PixelCNN, codes: Tensor, labels: Tensor | None = None) -> Tensor:
    """Negative log-likelihood of codes (B, *grid) in nats, summed over positions: (B,)."""
    nll = F.cross_entropy(model(codes, labels), codes, reduction="none")
    return reduce(nll, "b ... -> b", "sum")


def bits_per_code(model: PixelCNN, codes: Tensor, labels: Tensor | None = None) -> Tensor:
    """Negative log-likelihood in bits per position: (B,)."""
    return negative_log_likelihood(model, codes, labels) / (math.prod(codes.shape[1:]) * math.log(2))
