"""The built-in video (3D) plugin: streaming PyAV reader, h264 writer, a 3D conv codec, per-frame metrics."""

from __future__ import annotations

from typing import Annotated

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from vqtoolkit.errors import VQTError
from vqtoolkit.hookspecs import hookimpl
from vqtoolkit.modality import Modality, check_numbers
from vqtoolkit.nn.conv import ConvDecoder, ConvEncoder
from vqtoolkit.pictures import save_frame_reconstructions
from vqtoolkit.ranges import COUNT, WIDTH, Range

from .dataset import video_dataset
from .io import VIDEO_EXTENSIONS, VideoWriter, read_video, stream_video, video_info, write_video


def _check_3d(downsample: list[int]) -> None:
    if len(downsample) != 3:
        raise VQTError(f"vqvae3d needs downsample [time, height, width], got {list(downsample)}")


class VQVAE3DEncoder(ConvEncoder):
    """3D convolutions, downsampling time x height x width (4 x 4 x 4 as in VideoGPT), residual blocks."""

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        downsample: list[Annotated[int, Range(1, 1024)]] = (
            4,
            4,
            4,
        ),  # factor per axis (T, H, W), powers of two
        hidden: Annotated[int, WIDTH] = 128,  # channels of every hidden layer
        res_blocks: Annotated[int, COUNT] = 2,  # residual blocks after the strided convolutions
        res_hidden: Annotated[
            int, Range(0, 2**20)
        ] = 0,  # hidden channels in residual blocks; 0 = same as `hidden`
    ):
        _check_3d(downsample)
        super().__init__(in_channels, latent_dim, downsample, hidden, res_blocks, res_hidden)


class VQVAE3DDecoder(ConvDecoder):
    def __init__(
        self,
        out_channels: int,
        latent_dim: int,
        downsample: list[Annotated[int, Range(1, 1024)]] = (4, 4, 4),  # must match the encoder's
        hidden: Annotated[int, WIDTH] = 128,  # channels of every hidden layer
        res_blocks: Annotated[int, COUNT] = 2,  # residual blocks after the strided convolutions
        res_hidden: Annotated[int, Range(0, 2**20)] = 0,
    ):
        _check_3d(downsample)
        super().__init__(out_channels, latent_dim, downsample, hidden, res_blocks, res_hidden)


class SourceSizeWriter:
    """Writes decoded pieces back at the source file's frame size and frame rate (the model may work at
    the recipe's `size`), with an optional audio track."""

    def __init__(self, path, meta: dict, audio_rate: int = 0):
        source = meta.get("source", {})
        self.size = (source.get("height") or 0, source.get("width") or 0)
        fps = meta.get("fps") or source.get("fps") or 25.0
        self.writer = VideoWriter(path, fps, *self.size, audio_rate=audio_rate)

    def write(self, piece: Tensor) -> None:
        if not all(self.size) or tuple(piece.shape[-2:]) == self.size:
            self.writer.write(piece)
            return
        # One frame at a time: a piece of 720p float frames would take 11 MB a frame, several times over.
        for frame in rearrange(piece, "c t h w -> t c h w"):
            frame = F.interpolate(frame[None], self.size, mode="bilinear", antialias=True)
            self.writer.write(rearrange(frame, "1 c h w -> c 1 h w"))

    def write_audio(self, samples: Tensor) -> None:
        self.writer.write_audio(samples)

    def __enter__(self) -> SourceSizeWriter:
        self.writer.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.writer.__exit__(*exc)


def _write(path, video: Tensor, meta: dict) -> None:
    """write_video, at 25 fps when the model works at each source's own rate (samples have none)."""
    write_video(path, video, {**meta, "fps": meta.get("fps") or 25.0})


def _report_picture(originals, reconstructions, path, options: dict):
    from vqtoolkit.report import frame_strips

    return frame_strips(originals, reconstructions, path)


def _report_examples(dataset, options: dict, count: int):
    """The first and the last held-out clip."""
    import torch

    return torch.stack([dataset[i] for i in sorted({0, len(dataset) - 1})])


def _example_grid(options: dict) -> list[int]:
    return [int(options.get("frames", 8)), *(int(s) for s in options.get("size", [64, 64]))]


def _time_rate(media: dict) -> float:
    return media.get("fps") or media.get("source", {}).get("fps") or 1.0


@hookimpl
def register_modalities(register):
    register(
        "video",
        Modality(
            name="video",
            rank=3,
            extensions=VIDEO_EXTENSIONS,
            dataset=video_dataset,
            encoder="vqvae3d",
            decoder="vqvae3d",
            loss="mse",
            metrics=("psnr", "ssim"),  # vqt_image's metrics, averaged over frames
            read=read_video,
            write=_write,
            stream=stream_video,
            stream_writer=SourceSizeWriter,
            info=video_info,
            check_media=check_video_meta,
            picture=save_frame_reconstructions,
            report_picture=_report_picture,
            report_picture_name="frames.png",
            report_examples=_report_examples,
            report_samples=2,
            suffix=".mp4",
            time_rate=_time_rate,
            example_grid=_example_grid,
        ),
    )


@hookimpl
def register_encoders(register):
    register("vqvae3d", VQVAE3DEncoder)


@hookimpl
def register_decoders(register):
    register("vqvae3d", VQVAE3DDecoder)


MAX_SIDE = 16384  # pixels: what h264 encoders take at most


def check_video_meta(media: dict) -> None:
    """What decoding a video codes file takes from its media metadata (frame rate, the source's size, to
    which the frames are resized back), in sane ranges, before any frame is allocated."""
    check_numbers(media, {"fps": (float, 0, 1000)})
    if "source" in media:
        sides = {"height": (int, 0, MAX_SIDE), "width": (int, 0, MAX_SIDE)}
        check_numbers(media["source"], {**sides, "fps": (float, 0, 1000), "frames": (int, 0, 2**31)})
