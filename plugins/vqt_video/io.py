"""Reading and writing video through PyAV (FFmpeg): any container and codec FFmpeg decodes.

Video is a float32 tensor (3, T, H, W) of RGB values in [0, 1]. Frames are decoded in presentation order,
converted to RGB (and resized, when asked, in the same swscale pass: bilinear, which widens its filter
when shrinking, so it is antialiased) and, with `fps` > 0, resampled in time by timestamp, dropping or
repeating frames as FFmpeg's fps filter does (`_resample`). `stream_video` gives the same frames
piece by piece, holding one piece in memory. `VideoWriter` encodes h264 (libx264, yuv420p) with an
optional mono AAC audio track. A file a user hands us that cannot be read raises `VQTError` with one line
naming the file and the problem.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import VideoReformatter
from einops import rearrange
from torch import Tensor

from vqtoolkit.errors import VQTError
from vqtoolkit.media import AtomicWriter, first_line, reading_media, stream_duration

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
WRITE_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}  # all h264 (+ AAC)
DEFAULT_FPS = 25.0  # when a stream states no frame rate at all
DEFAULT_CRF = 18  # x264 constant rate factor: 0 lossless, 18 visually near-lossless, 23 x264's default
MAX_RATE_DENOMINATOR = 100000  # 23.976... -> 24000/1001
SLOT_TOLERANCE = 1e-6  # of an output frame: exact halves (2:1 rate changes) round up despite float error


def _reading_video(path: Path):
    return reading_media(path, "video")


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise VQTError(f"{path}: no video stream")
    if container.format.name.endswith("_pipe") or container.format.name == "image2":
        # FFmpeg opens a still image (say a PNG named .mp4) as a one-frame video: refuse, it is not one
        kind = container.format.name.removesuffix("_pipe").upper()
        raise VQTError(f"{path}: holds a still image ({kind}), not a video")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # a damaged header can name a codec FFmpeg has no decoder for
        raise VQTError(f"{path}: its video stream has no decoder (a damaged or unknown codec)")
    return stream


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else DEFAULT_FPS


def video_info(path: str | Path) -> dict[str, Any]:
    """{"fps", "frames", "height", "width", "has_audio", "duration_seconds"} from the headers (no decoding).

    `frames` and `duration_seconds` are None when the container does not say (Matroska/WebM give no
    frame count).
    """
    path = Path(path)
    with _reading_video(path), av.open(str(path)) as container:
        stream = _video_stream(container, path)
        duration = stream_duration(container, stream)
        info = {
            "fps": _stream_fps(stream),
            "frames": stream.frames or None,
            "height": stream.codec_context.height,
            "width": stream.codec_context.width,
            "has_audio": bool(container.streams.audio),
            "duration_seconds": duration,
        }
        if len(container.streams.video) > 1:
            info["note"] = f"{len(container.streams.video)} video tracks: the first one was used"
        return info


def _check_options(path: Path, size: list[int], fps: float) -> None:
    if len(size) not in (0, 2) or any(int(side) < 1 for side in size):
        raise VQTError(
            f"{path}: size must be [height, width] with positive sides, or empty; got {list(size)}"
        )
    if fps < 0:
        raise VQTError(f"{path}: fps must be positive, or 0 to keep the source rate; got {fps}")


def _timed_frames(path: Path, size: list[int]) -> Iterator[tuple[float, float, np.ndarray]]:
    """(source fps, time in seconds, (H, W, 3) uint8 RGB) per decoded frame, all at one size.

    The size is `size` [H, W], or else the first frame's (a resolution change mid-stream is resized back).
    """
    with _reading_video(path), av.open(str(path)) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        source_fps = _stream_fps(stream)
        height, width = (int(side) for side in size) if size else (None, None)
        # one converter for the whole file: each frame's own would set its conversion up anew (5x slower)
        reformatter = VideoReformatter()
        for index, frame in enumerate(container.decode(stream)):
            height, width = height or frame.height, width or frame.width
            rgb = reformatter.reformat(
                frame, format="rgb24", width=width, height=height, interpolation="BILINEAR"
            )
            image = rgb.to_ndarray()
            time = frame.time if frame.time is not None else index / source_fps
            yield source_fps, time, image


def _resample(frames: Iterator[tuple[float, float, np.ndarray]], fps: float) -> Iterator[np.ndarray]:
    """Frames at `fps`, as FFmpeg's fps filter makes them: each source frame takes the output slot nearest
    its timestamp, and output slot k shows the latest source frame whose slot is at most k (frames sharing
    a slot are dropped but the last, empty slots repeat the frame before). The last source frame lasts
    1 / source fps, so round(duration * fps) frames come out (at least one).
    """
    start = held = None
    index = 0  # the next output slot
    for frame_fps, time, image in frames:
        start = time if start is None else start
        slot = math.floor((time - start) * fps + 0.5 + SLOT_TOLERANCE)
        while held is not None and index < slot:
            yield held
            index += 1
        held, held_time, source_fps = image, time, frame_fps
    if held is None:
        return
    total = math.floor((held_time + 1 / source_fps - start) * fps + 0.5 + SLOT_TOLERANCE)
    while index < max(total, 1):
        yield held
        index += 1


def _frames(path: Path, size: list[int], fps: float) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 RGB frames of the first video stream, resized and resampled as asked."""
    _check_options(path, size, fps)
    timed = _timed_frames(path, size)
    frames = _resample(timed, fps) if fps > 0 else (image for _, _, image in timed)
    any_frame = False
    for image in frames:
        any_frame = True
        yield image
    if not any_frame:
        raise VQTError(f"{path}: no decodable video frames")


def _to_tensor(images: list[np.ndarray]) -> Tensor:
    """(H, W, 3) uint8 frames -> (3, T, H, W) uint8."""
    return rearrange(torch.from_numpy(np.stack(images)), "t h w c -> c t h w").contiguous()


def _output_fps(path: Path, fps: float) -> float:
    return fps if fps > 0 else video_info(path)["fps"]


def read_video_uint8(
    path: str | Path, size: list[int] = (), fps: float = 0.0, max_frames: int = 0
) -> tuple[Tensor, dict[str, Any]]:
    """`read_video` as uint8 (3, T, H, W) in [0, 255]: a quarter of the memory of float32."""
    path = Path(path)
    frames = _frames(path, list(size), fps)
    video = _to_tensor(list(itertools.islice(frames, max_frames or None)))
    _, frames, height, width = video.shape
    meta = {"fps": _output_fps(path, fps), "frames": frames, "height": height, "width": width}
    return video, meta


def read_video(
    path: str | Path, size: list[int] = (), fps: float = 0.0, max_frames: int = 0
) -> tuple[Tensor, dict[str, Any]]:
    """Decode a whole video as float32 (3, T, H, W) RGB in [0, 1].

    size: [height, width] to resize every frame to (bilinear, antialiased); empty keeps the native size.
    fps: frame rate to resample to by dropping/repeating frames by timestamp; 0 keeps the source rate.
    max_frames: stop after this many (output) frames; 0 reads all.
    Returns the video and {"fps", "frames", "height", "width"} of what is returned.
    """
    video, meta = read_video_uint8(path, size, fps, max_frames)
    return video.float() / 255, meta


def stream_video(
    path: str | Path, chunk: int = 16, size: list[int] = (), fps: float = 0.0
) -> Iterator[Tensor]:
    """`read_video`'s frames as float32 (3, <= chunk, H, W) pieces, holding only the current piece.

    Their concatenation along time equals `read_video(path, size, fps)[0]`.
    """
    path = Path(path)
    if chunk < 1:
        raise VQTError(f"chunk must be at least 1 frame, got {chunk}")
    _check_options(path, size, fps)
    return _pieces(_frames(path, list(size), fps), chunk)


def _pieces(frames: Iterator[np.ndarray], chunk: int) -> Iterator[Tensor]:
    while piece := list(itertools.islice(frames, chunk)):
        yield _to_tensor(piece).float() / 255


class VideoWriter(AtomicWriter):
    """Encode video progressively as h264 (libx264, yuv420p) in .mp4/.m4v/.mov/.mkv, with optional audio.

        with VideoWriter("out.mp4", fps=25, height=64, width=64, audio_rate=16000) as writer:
            writer.write(piece)  # (3, n, H, W) RGB float in [0, 1], clamped
            writer.write_audio(samples)  # (1, n) float in [-1, 1]: mono AAC at audio_rate

    The frame rate is kept exactly as a fraction (23.976... is written as 24000/1001). height/width 0 take
    the first piece's size. yuv420p needs even sides and h264 encoders here cannot crop, so an odd height
    or width is padded by replicating the last row/column: the file (and whoever reads it) has the even
    size. The file appears under its name only once closed without an error (written to a temp file).
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        height: int = 0,
        width: int = 0,
        audio_rate: int = 0,
        crf: int = DEFAULT_CRF,
    ):
        super().__init__(path)
        suffix = self.path.suffix.lower()
        if suffix not in WRITE_FORMATS:
            raise VQTError(f"{self.path}: cannot write video as '{suffix}' (use {', '.join(WRITE_FORMATS)})")
        if not fps or fps <= 0:
            raise VQTError(f"{self.path}: fps must be positive, got {fps}")
        if height < 0 or width < 0 or audio_rate < 0:
            raise VQTError(f"{self.path}: height, width and audio_rate must not be negative")
        self.rate = Fraction(fps).limit_denominator(MAX_RATE_DENOMINATOR)
        self.height, self.width, self.audio_rate, self.crf = height, width, audio_rate, crf
        self.frames_written = 0
        self.samples_written = 0
        self.pending_audio: list[Tensor] = []  # audio written before the container is open
        self.video = self.audio = None
        if height and width:
            self._open()

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(self.temp), "w", format=WRITE_FORMATS[self.path.suffix.lower()])
            self.video = self.container.add_stream("libx264", rate=self.rate)
            self.video.width, self.video.height = self.width + self.width % 2, self.height + self.height % 2
            self.video.pix_fmt = "yuv420p"
            self.video.codec_context.time_base = 1 / self.rate
            self.video.options = {"crf": str(self.crf)}
            if self.audio_rate:
                self.audio = self.container.add_stream("aac", rate=self.audio_rate, layout="mono")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._discard()
            raise VQTError(f"{self.path}: cannot write video ({first_line(exc)})") from None
        for samples in self.pending_audio:
            self._encode_audio(samples)
        self.pending_audio = []

    def write(self, piece: Tensor) -> None:
        """Encode (3, n, H, W) RGB frames in [0, 1] (a (3, H, W) tensor counts as one frame)."""
        piece = piece.detach().float().cpu()
        piece = piece[:, None] if piece.ndim == 3 else piece
        if self.container is None and piece.ndim == 4:
            self.height, self.width = self.height or piece.shape[2], self.width or piece.shape[3]
            self._open()
        if piece.ndim != 4 or piece.shape[0] != 3 or tuple(piece.shape[2:]) != (self.height, self.width):
            raise VQTError(
                f"{self.path}: expected (3, n, {self.height}, {self.width}) video, got {tuple(piece.shape)}"
            )
        piece = F.pad(piece, (0, self.width % 2, 0, self.height % 2), mode="replicate")
        images = rearrange((piece.clamp(0, 1) * 255).round().to(torch.uint8), "c t h w -> t h w c").numpy()
        for image in images:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = self.frames_written, 1 / self.rate
            self.frames_written += 1
            self._mux(self.video, frame)

    def write_audio(self, samples: Tensor) -> None:
        """Encode (1, n) mono samples in [-1, 1] (clamped) into the AAC track at `audio_rate`."""
        if not self.audio_rate:
            raise VQTError(f"{self.path}: this writer has no audio track (give audio_rate)")
        samples = samples.detach().float().cpu()
        samples = samples[None] if samples.ndim == 1 else samples
        if samples.ndim != 2 or samples.shape[0] != 1:
            raise VQTError(f"{self.path}: expected (1, n) mono audio, got {tuple(samples.shape)}")
        if self.container is None:
            self.pending_audio.append(samples)
        else:
            self._encode_audio(samples)

    def _encode_audio(self, samples: Tensor) -> None:
        if samples.shape[-1] == 0:
            return
        frame = av.AudioFrame.from_ndarray(samples.clamp(-1, 1).numpy(), format="fltp", layout="mono")
        frame.sample_rate = self.audio_rate
        frame.pts, frame.time_base = self.samples_written, Fraction(1, self.audio_rate)
        self.samples_written += samples.shape[-1]
        self._mux(self.audio, frame)

    def _mux(self, stream: av.stream.Stream, frame: av.frame.Frame | None) -> None:
        try:
            self.container.mux(stream.encode(frame))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise VQTError(f"{self.path}: cannot encode video ({first_line(exc)})") from None

    def close(self) -> None:
        """Flush the encoders, finish the file and move it into place."""
        if self.frames_written == 0:
            self._discard()
            raise VQTError(f"{self.path}: no video frames were written")
        if self.container is None:
            return
        self._mux(self.video, None)
        if self.audio is not None:
            self._mux(self.audio, None)
        try:
            self._finish()
        except (av.error.FFmpegError, OSError) as exc:
            self._discard()
            raise VQTError(f"{self.path}: cannot write video ({first_line(exc)})") from None


def write_video(path: str | Path, video: Tensor, meta: dict[str, Any]) -> None:
    """Write (3, T, H, W) RGB in [0, 1] as h264 at meta["fps"] (see `VideoWriter` for odd sizes)."""
    path = Path(path)
    if video.ndim != 4 or video.shape[0] != 3:
        raise VQTError(f"{path}: can only write (3, T, H, W) video, got {tuple(video.shape)}")
    if not meta.get("fps"):
        raise VQTError(f"{path}: no frame rate given (meta['fps'])")
    with VideoWriter(path, meta["fps"], video.shape[2], video.shape[3]) as writer:
        for piece in video.split(16, dim=1):
            writer.write(piece)
