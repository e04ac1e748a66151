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
    # picture(originals, reconstructions, path): the training picture (recon_<step>.png) of a fixed held-out
    # batch and its reconstruction, saved as a PNG without matplotlib; None = no training pictures
    picture: Callable[..., Any] | None = None
    # report_picture(originals, reconstructions, path, data_options): `vqt report`'s matplotlib drawing of
    # held-out examples (N, C, *grid) and their reconstructions, or of prior samples alone when
    # reconstructions is None, saved at path; `data_options` are the recipe's `data` options (e.g. the
    # sample rate). None = the report draws no media
    report_picture: Callable[..., Any] | None = None
    report_picture_name: str = "reconstructions.png"  # the file name the report saves it under
    # report_examples(dataset, data_options, count) -> (N, C, *grid) held-out examples for that picture (for
    # speech, a few seconds of consecutive windows); None = the first `count` examples
    report_examples: Callable[..., Any] | None = None
    report_samples: int = 16  # prior samples `vqt report` decodes and draws
    # overview(samples, path): one picture of many samples (N, C, *grid), which `vqt sample` saves as
    # grid.png (images: a grid of them); None = none
    overview: Callable[..., Any] | None = None
    suffix: str = ""  # the suffix `vqt sample` writes ("" = the first of `extensions`)
    sample_bits: int = 8  # bits of one stored media sample: the prior's bits-per-dimension bound uses it
    # time_rate(media) -> steps per second along the first grid axis, from the media metadata that `read`
    # or `stream` returned (the fps of video, the sample rate of audio); `vqt decode` interleaves a video
    # and its audio track by it. None = 1.0
    time_rate: Callable[[dict], float] | None = None
    # example_grid(data_options) -> the grid of one training example, e.g. [frames, height, width], that
    # `vqt export` traces with; None = the shape of the first held-out example
    example_grid: Callable[[dict], list[int]] | None = None
    # check_media(media) raises ValueError when a codes file's media metadata (what `read` / `stream` and
    # `info` wrote) has a wrong type or an absurd value; called before decoding allocates anything
    check_media: Callable[[dict], None] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # a run directory (config.yaml + model.safetensors) the plugin ships: `--model NAME` and commands given
    # no --model use it; "" = none shipped
    default_model: str = ""

    @property
    def output_suffix(self) -> str:
        return self.suffix or self.extensions[0]

    def rate(self, media: dict) -> float:
        """Steps per second of the first grid axis for this media metadata (see `time_rate`)."""
        return float(self.time_rate(media)) if self.time_rate else 1.0

    def duration(self, media: dict, steps: int) -> float | None:
        """Seconds that `steps` steps of the first grid axis last, or None when that axis is not time or
        the metadata gives no usable rate (metadata read from a file is untrusted: never an exception)."""
        if self.time_rate is None:
            return None
        try:
            rate = self.rate(media)
        except (KeyError, TypeError, ValueError):
            return None
        return steps / rate if rate > 0 else None


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
