"""Chunked encoding and decoding along time with bounded memory, without seams.

Each chunk is processed with `context` steps of real neighbours on both sides, measured from the
model's receptive field, and only the chunk's own outputs are kept. Windows start at multiples of
the downsampling so strided convolutions line up exactly as in a whole-file pass: the codes equal
whole-file codes and decoded chunks join without seams (up to float rounding).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterable, Iterator
from copy import deepcopy as copy_module

import torch
import torch.nn.functional as F
from einops import reduce
from torch import Tensor, nn


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """Iterate `items` in a background thread, up to `depth` ahead, so decoding media overlaps the model's
    forward pass (PyAV and torch both release the GIL). Errors are raised in the consumer."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop, done = threading.Event(), object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            buffer.put((done, exc))
            return
        buffer.put((done, None))

    thread = threading.Thread(target=produce, daemon=True, name="vqt-prefetch")
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _positive_copy(module: nn.Module) -> nn.Module:
    """A copy with every weight and bias made positive: fed positive inputs, no ReLU in it is ever off, so
    its input gradient reaches every step the architecture connects (whatever the trained weights)."""
    copy = copy_module(module)
    with torch.no_grad():
        for parameter in copy.parameters():
            parameter.abs_().add_(1e-3)
    return copy


def receptive_radius(module: nn.Module, shape: list[int], outputs_per_input: float) -> int:
    """Input steps along the first grid axis that reach the middle output, on either side: found from the
    gradient of that output with respect to a (1, *shape) input, grown until the field fits inside.
    `outputs_per_input` is 1/downsampling for an encoder and the upsampling for a decoder.

    With the trained weights and one random input, ReLUs that happen to be off hide part of the field, so
    the field is the union of a seeded random probe and a probe of the all-positive copy of the module."""
    shape = list(shape)
    positive = _positive_copy(module)
    while True:
        random = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
        touched = torch.zeros(shape[1], dtype=torch.bool)
        for probe, x in ((module, random), (positive, random.abs() + 0.1)):
            x.requires_grad_()
            with torch.enable_grad():
                out = probe(x)
                middle = out.shape[2] // 2
                (grad,) = torch.autograd.grad(out.narrow(2, middle, 1).sum(), x)  # no weight gradients
            touched |= reduce(grad.abs(), "1 c t ... -> t", "sum") > 0
        steps = torch.nonzero(touched).flatten()
        if len(steps) == 0:
            raise ValueError("the model's output does not depend on its input")
        first, last = steps.min().item(), steps.max().item()
        if (first > 0 and last < shape[1] - 1) or shape[1] > 2**22:
            centre = middle / outputs_per_input
            return math.ceil(max(centre - first, last - centre)) + 1
        shape[1] *= 2


def _pad_tail(buffer: Tensor, multiple: int) -> Tensor:
    """Replicate the last step so the length is a multiple of the downsampling (as a whole-file pass does)."""
    missing = -buffer.shape[1] % multiple
    if not missing:
        return buffer
    return torch.cat(
        [buffer, buffer.narrow(1, buffer.shape[1] - 1, 1).expand(-1, missing, *buffer.shape[2:])], 1
    )


@torch.no_grad()
def encode_stream(
    encode, pieces: Iterable[Tensor], downsample: int, chunk: int, context: int, device
) -> tuple[Tensor, list[int]]:
    """Codes of a media stream of (C, n, ...) pieces, and the stream's grid shape [steps, ...].

    `encode` maps a (1, C, T, ...) batch to codes (1, [Q,] T / downsample, ...)."""
    chunk, context = round_up(chunk, downsample), round_up(context, downsample)
    source = iter(prefetch(pieces))
    buffer, buffer_start, emitted, total = None, 0, 0, None
    codes: list[Tensor] = []
    time_dim = None
    while True:
        while total is None and (
            buffer is None or buffer_start + buffer.shape[1] < emitted + chunk + context
        ):
            piece = next(source, None)
            if piece is None:
                total = buffer_start + (buffer.shape[1] if buffer is not None else 0)
                if buffer is not None:
                    buffer = _pad_tail(buffer, downsample)
            else:
                buffer = piece if buffer is None else torch.cat([buffer, piece], 1)
        if buffer is None:
            raise ValueError("the stream holds no samples")
        end = buffer_start + buffer.shape[1]
        if emitted >= end:
            break
        stop = min(emitted + chunk, end)
        window_start, window_end = max(0, emitted - context), min(end, stop + context)
        window = buffer.narrow(1, window_start - buffer_start, window_end - window_start)
        window_codes = encode(window.unsqueeze(0).to(device).contiguous())[0].cpu()
        if time_dim is None:  # codes are (..., T', *rest): time is where the length matches
            time_dim = window_codes.dim() - (buffer.dim() - 1)
        first = (emitted - window_start) // downsample
        codes.append(window_codes.narrow(time_dim, first, (stop - emitted) // downsample))
        emitted = stop
        drop = emitted - context - buffer_start
        if drop > 0:
            buffer, buffer_start = buffer.narrow(1, drop, buffer.shape[1] - drop), buffer_start + drop
    return torch.cat(codes, time_dim), [total, *buffer.shape[2:]]


@torch.no_grad()
def decode_stream(
    decode, codes: Tensor, time_dim: int, upsample: int, chunk: int, context: int, length: int, device
) -> Iterator[Tensor]:
    """Media pieces (C, n, ...) decoded from codes chunk by chunk; their concatenation has `length` steps."""
    steps = codes.shape[time_dim]
    produced = 0
    for start in range(0, steps, chunk):
        stop = min(start + chunk, steps)
        window_start, window_end = max(0, start - context), min(steps, stop + context)
        window = codes.narrow(time_dim, window_start, window_end - window_start)
        media = decode(window.unsqueeze(0).to(device))[0].cpu()
        piece = media.narrow(1, (start - window_start) * upsample, (stop - start) * upsample)
        piece = piece.narrow(1, 0, max(0, min(piece.shape[1], length - produced)))
        produced += piece.shape[1]
        if piece.shape[1]:
            yield piece


def crop_to(media: Tensor, shape: list[int]) -> Tensor:
    """Crop (C, *grid) media to the grid `shape` (undoing the padding to a multiple of the downsampling)."""
    return media[(slice(None), *(slice(0, size) for size in shape))]


def pad_to_multiple(batch: Tensor, multiple: tuple[int, ...]) -> Tensor:
    """Replicate-pad the trailing grid axes of (B, C, *grid) up to a multiple of each axis's factor."""
    pads = []
    for size, factor in zip(reversed(batch.shape[2:]), reversed(multiple)):
        pads += [0, -size % factor]
    return F.pad(batch, pads, mode="replicate") if any(pads) else batch
