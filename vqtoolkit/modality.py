"""What a modality plugin registers: how to read, write and batch one kind of media."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Modality:
    name: str
    rank: int  # latent grid rank: 1 = (B,C,T) speech, 2 = (B,C,H,W) images, 3 = (B,C,T,H,W) video
    extensions: tuple[str, ...]  # file suffixes `vqt tokenize` routes to this modality, e.g. (".png",)
    # dataset(path, split, channels, **options) -> torch Dataset of (C, *grid) tensors; options are recipe
    # keys under `data` and must have annotated defaults so recipes are type-checked.
    dataset: Callable[..., Any]
    encoder: str  # default component names when a recipe names none
    decoder: str
    loss: str
    metrics: tuple[str, ...] = ()
    value_range: tuple[float, float] = (0.0, 1.0)  # media sample values; audio uses (-1.0, 1.0)
    read: Callable[..., Any] | None = None  # read(path, **options) -> media tensor and its metadata
    write: Callable[..., Any] | None = None  # write(path, media, metadata)
    # stream(path, chunk=N, **options) yields (C, n, ...) pieces along the first grid axis (time) with bounded
    # memory; with it `vqt tokenize` encodes long files chunk by chunk.
    stream: Callable[..., Any] | None = None
    # stream_writer(path, metadata, audio_rate=0) -> context manager with .write(piece), and
    # .write_audio(samples) when audio_rate > 0; with it `vqt decode` streams.
    stream_writer: Callable[..., Any] | None = None
    # info(path) -> what the source file was (size, rate, fps...), kept in codes files so decoding restores it
    info: Callable[..., Any] | None = None
    # picture(originals, reconstructions, path): saves a side-by-side picture; None = the core's default
    picture: Callable[..., Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # a run directory (config.yaml + model.safetensors) the plugin ships: `--model NAME` and commands given
    # no --model use it; "" = none shipped
    default_model: str = ""
