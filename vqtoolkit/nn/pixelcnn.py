"""PixelCNN priors over VQ code grids: a causal dilated stack for speech (rank 1), a Gated PixelCNN with
vertical and horizontal stacks for images (rank 2, van den Oord et al. 2016) and the same idea with one more
stack for video (rank 3). Codes are generated in raster order: t, then h, then w.

One stack per axis, outermost first. The stack of axis `a` keeps the axes before `a` fixed, is causal along
`a` and sees a centred window on the axes after it, so at a position x it depends only on positions that
agree with x before `a` and are strictly earlier along `a`. Each stack takes the previous stack's
pre-activations through a 1x1 link, and the last (horizontal) stack is the model's output, so every earlier
position in the window is seen: there is no blind spot. For rank 2 these are the paper's vertical and
horizontal stacks; for rank 3 a "previous frames" stack feeds the vertical one; for rank 1 the horizontal
stack is all there is, with dilations doubling each layer (WaveNet).

Receptive field, for kernel k = 2p + 1 and L layers: output x sees y < x (in generation order) when, with a
the first axis where they differ, x_a - r <= y_a < x_a and |y_b - x_b| <= r on every axis b after a,
where r = L * p. Rank 1 is dilated instead: x - y in [1, p + p * sum of the dilations of layers 1..L-1].

`MaskedConv` is the original PixelCNN's raster-masked convolution (stacked, it has a blind spot). The stacks
use the same type A / B idea with the masked taps cropped off instead of multiplied by zero: a layer's
kernel ends one step before the current position along its axis in the first layer (type A) and at it in
later layers (type B).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def raster_mask(kernel: tuple[int, ...], mask_type: str) -> Tensor:
    """1 on the kernel taps before the centre in raster order (type A), or at or before it (type B)."""
    if mask_type not in ("A", "B") or any(k % 2 == 0 for k in kernel):
        raise ValueError(f"need mask type 'A' or 'B' and an odd kernel, got {mask_type!r} and {kernel}")
    taps = math.prod(kernel)
    # with odd sides the centre is the middle tap of the row-major (raster) order
    return (torch.arange(taps) < taps // 2 + (mask_type == "B")).float().reshape(kernel)


class MaskedConv(nn.Module):
    """Convolution of rank 1-3 seeing only the taps before (A) or up to (B) the centre in raster order."""

    def __init__(
        self,
        rank: int,
        in_channels: int,
        out_channels: int,
        kernel: int | tuple[int, ...] = 3,
        mask_type: str = "B",
        dilation: int = 1,
    ):
        super().__init__()
        kernel = (kernel,) * rank if isinstance(kernel, int) else tuple(kernel)
        self.rank, self.dilation = rank, dilation
        self.padding = tuple(dilation * (k // 2) for k in kernel)
        self.conv = CONV[rank](in_channels, out_channels, kernel)
        self.register_buffer("mask", raster_mask(kernel, mask_type))

    def forward(self, x: Tensor) -> Tensor:
        weight = self.conv.weight * self.mask
        return CONV_FN[self.rank](x, weight, self.conv.bias, padding=self.padding, dilation=self.dilation)


class GatedLayer(nn.Module):
    """A layer of the stack causal along `axis`: [a, b] = conv + link + class bias; out = tanh(a) sigmoid(b).

    `link` adds a 1x1 conv of the previous stack's pre-activation at the same positions. The horizontal
    (last) stack also gets a 1x1 conv on its output and, after the first layer, a residual connection.
    """

    def __init__(
        self,
        rank: int,
        axis: int,
        channels: int,
        kernel: int,
        first: bool,
        dilation: int = 1,
        link: bool = False,
        horizontal: bool = False,
        num_classes: int = 0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.rank, self.axis, self.half = rank, axis, kernel // 2
        taps = self.half if first else self.half + 1
        self.shift = int(first)  # type A: the window ends one step before the current position
        self.span = (taps - 1) * dilation + 1  # window length along `axis`
        self.front = self.span - 1 + self.shift  # how far before the current position the window starts
        size = (1,) * axis + (taps,) + (kernel,) * (rank - axis - 1)
        dilations = (1,) * axis + (dilation,) + (1,) * (rank - axis - 1)
        conv = CONV[rank]
        self.conv = conv(channels, 2 * channels, size, dilation=dilations)
        self.link = conv(2 * channels, 2 * channels, 1) if link else None
        self.cond = nn.Embedding(num_classes, 2 * channels) if num_classes else None
        self.out = nn.Sequential(nn.Dropout(dropout), conv(channels, channels, 1)) if horizontal else None
        self.residual = horizontal and not first

    def pad(self, x: Tensor) -> Tensor:
        """Pad a grid so the conv gives an output per position: causal along `axis`, centred after it."""
        pads = []
        for a in reversed(range(self.rank)):  # F.pad lists the last axis first
            if a < self.axis:
                pads += [0, 0]
            elif a == self.axis:
                pads += [self.front, -self.shift]  # a negative pad crops the last position
            else:
                pads += [self.half, self.half]
        return F.pad(x, pads)

    def class_bias(self, labels: Tensor | None) -> Tensor | None:
        if self.cond is None:
            return None
        return rearrange(self.cond(labels), "b c -> b c" + " 1" * self.rank)

    def forward(
        self, window: Tensor, below: Tensor | None, bias: Tensor | None, previous: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Returns (output, pre-activation) at some positions, from `window`, the padded input around them,
        `below`, the previous stack's pre-activation there, and `previous`, this layer's input there."""
        pre = self.conv(window)
        if self.link is not None:
            pre = pre + self.link(below)
        if bias is not None:
            pre = pre + bias
        a, b = pre.chunk(2, dim=1)
        out = torch.tanh(a) * torch.sigmoid(b)
        if self.out is not None:
            out = self.out(out)
        if self.residual:
            out = out + previous
        return out, pre


class PixelCNN(nn.Module):
    """Autoregressive prior over integer codes (B, *grid) of rank 1, 2 or 3; returns logits (B, K, *grid).

    Args:
        codebook_size: number of codes K.
        rank: grid rank: 1 speech, 2 images, 3 video (t, h, w).
        hidden: channels of the code embedding and of every stack.
        layers: gated layers per stack.
        kernel: odd kernel width k >= 3; causal axes use its causal half, k // 2 + 1 taps.
        num_classes: > 0 makes the model class-conditional (a label embedding is a bias in every gated layer).
        dropout: before the 1x1 conv of each horizontal-stack layer.
        dilation_cycle: rank 1 only: layer l > 0 has dilation 2 ** ((l - 1) % dilation_cycle).
    """

    def __init__(
        self,
        codebook_size: int,
        rank: int,
        hidden: int = 64,
        layers: int = 8,
        kernel: int = 3,
        num_classes: int = 0,
        dropout: float = 0.0,
        dilation_cycle: int = 10,
    ):
        super().__init__()
        if rank not in CONV:
            raise ValueError(f"rank must be 1, 2 or 3, got {rank}")
        if kernel < 3 or kernel % 2 == 0:
            raise ValueError(f"kernel must be odd and at least 3, got {kernel}")
        if layers < 1 or dilation_cycle < 1:
            raise ValueError("layers and dilation_cycle must be at least 1")
        self.codebook_size, self.rank, self.num_classes = codebook_size, rank, num_classes
        self.embed = nn.Embedding(codebook_size, hidden)

        def dilation(layer: int) -> int:
            return 2 ** ((layer - 1) % dilation_cycle) if rank == 1 and layer > 0 else 1

        self.stacks = nn.ModuleList(
            nn.ModuleList(
                GatedLayer(
                    rank,
                    axis,
                    hidden,
                    kernel,
                    first=layer == 0,
                    dilation=dilation(layer),
                    link=axis > 0,
                    horizontal=axis == rank - 1,
                    num_classes=num_classes,
                    dropout=dropout,
                )
                for layer in range(layers)
            )
            for axis in range(rank)
        )
        conv = CONV[rank]
        self.head = nn.Sequential(
            nn.ReLU(), conv(hidden, hidden, 1), nn.ReLU(), conv(hidden, codebook_size, 1)
        )

    def check_inputs(self, codes: Tensor, labels: Tensor | None) -> None:
        if codes.ndim != self.rank + 1:
            shape = tuple(codes.shape)
            raise ValueError(f"expected codes (B, *grid) with a grid of rank {self.rank}, got {shape}")
        if (labels is None) != (self.num_classes == 0):
            raise ValueError("labels are required exactly when num_classes > 0")

    def embed_codes(self, codes: Tensor) -> Tensor:
        """(B, *grid) -> (B, hidden, *grid)."""
        return rearrange(self.embed(codes), "b ... c -> b c ...")

    def forward(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        self.check_inputs(codes, labels)
        return self.forward_embedded(self.embed_codes(codes), labels)

    def forward_embedded(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits (B, K, *grid) from embedded codes (B, hidden, *grid)."""
        below = [None] * len(self.stacks[0])
        for stack in self.stacks:
            h, pres = x, []
            for layer, link_input in zip(stack, below):
                h, pre = layer(layer.pad(h), link_input, layer.class_bias(labels), h)
                pres.append(pre)
            below = pres
        return self.head(h)
