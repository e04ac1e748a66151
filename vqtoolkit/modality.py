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
    # check_media(media) raises ValueError when a codes file's media metadata (what `read` / `stream` and
    # `info` wrote) has a wrong type or an absurd value; called before decoding allocates anything
    check_media: Callable[[dict], None] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # a run directory (config.yaml + model.safetensors) the plugin ships: `--model NAME` and commands given
    # no --model use it; "" = none shipped
    default_model: str = ""


def check_numbers(
    values: Any, limits: dict[str, tuple[type, float, float]], required: tuple[str, ...] = ()
) -> None:
    """ValueError unless `values` is a mapping whose keys in `limits` that are present (and all of
    `required`) are numbers of the given kind (int, or float for any real number) within [low, high]."""
    if not isinstance(values, dict):
        raise ValueError(f"{values!r} is not a mapping")
    for key, (kind, low, high) in limits.items():
        if key not in values:
            if key in required:
                raise ValueError(f"{key} is missing")
            continue
        value = values[key]
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric or (kind is int and not isinstance(value, int)) or not low <= value <= high:
            kind_name = "an integer" if kind is int else "a number"
            raise ValueError(f"{key} {value!r} is not {kind_name} within [{low:g}, {high:g}]")
