"""Reading and writing audio through PyAV (FFmpeg): any audio file, or the audio track of a video.

Audio is a float32 tensor (1, T) in [-1, 1]: decoded frames are converted to float at the source rate
and channel layout by hand (`_frame_samples`: planar or packed, unsigned/signed integer or float), mixed
down to mono (mean of channels), then resampled with `torchaudio.functional.resample`. `stream_audio`
gives the same samples piece by piece with bounded memory (`StreamResampler`). A file a user hands us
that cannot be read raises `VQTError` with one line naming the file and the problem.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torchaudio.functional as AF
from einops import rearrange, reduce
from torch import Tensor

from vqtoolkit.errors import VQTError
from vqtoolkit.media import AtomicWriter, check_file, first_line, reading_media, stream_duration

VIDEO_CONTAINERS = (".mp4", ".mkv", ".webm", ".mov")  # their audio track is read
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".g722", *VIDEO_CONTAINERS)
RAW_FORMATS = {".g722": "g722"}  # headerless files FFmpeg cannot probe: name their demuxer
# suffix -> (container format, codec, sample format of the frames we hand the encoder)
WRITE_FORMATS = {
    ".wav": ("wav", "pcm_s16le", "s16"),
    ".flac": ("flac", "flac", "s16"),
    ".opus": ("ogg", "libopus", "flt"),
    ".ogg": ("ogg", "libopus", "flt"),
}
OPUS_RATE = 48000  # the only rate libopus encodes here
LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
INT16_SCALE = 32768
# torchaudio.functional.resample's defaults, which StreamResampler must match
LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99


def _reading_audio(path: Path):
    return reading_media(path, "audio")


def _open(path: Path) -> av.container.InputContainer:
    return av.open(str(path), format=RAW_FORMATS.get(path.suffix.lower()))


def _audio_stream(container: av.container.InputContainer, path: Path) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise VQTError(f"{path}: no audio stream")
    stream = container.streams.audio[0]
    if stream.codec_context is None:  # a damaged header can name a codec FFmpeg has no decoder for
        raise VQTError(f"{path}: its audio stream has no decoder (a damaged or unknown codec)")
    return stream


def audio_info(path: str | Path) -> dict[str, Any]:
    """{"source_rate", "source_channels", "duration_seconds"} from the container headers (no decoding).

    `duration_seconds` is None when the container does not say; for raw or VBR files it is an estimate.
    """
    path = Path(path)
    with _reading_audio(path), _open(path) as container:
        stream = _audio_stream(container, path)
        duration = stream_duration(container, stream)
        context = stream.codec_context
        info = {
            "source_rate": context.sample_rate,
            "source_channels": context.layout.nb_channels,
            "duration_seconds": duration,
        }
        if len(container.streams.audio) > 1:
            info["note"] = f"{len(container.streams.audio)} audio tracks: the first one was used"
        return info


def _frame_samples(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame as float32 (channels, n) in [-1, 1], whatever its sample format."""
    array = frame.to_ndarray()
    if not frame.format.is_planar:  # packed: one row of interleaved samples
        array = rearrange(array, "1 (n c) -> c n", c=frame.layout.nb_channels)
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    if array.dtype.kind == "u":  # u8: silence is 128
        return (array.astype(np.float32) - 128) / 128
    return (array / float(2 ** (8 * array.dtype.itemsize - 1))).astype(np.float32)


def _decode(path: Path) -> Iterator[tuple[Tensor, int, int]]:
    """(mono samples (n,), source rate, source channels) for each decoded frame of the first audio stream."""
    with _reading_audio(path), _open(path) as container:
        stream = _audio_stream(container, path)
        first_rate = None
        for frame in container.decode(stream):
            if frame.samples == 0:
                continue
            first_rate = first_rate or frame.sample_rate
            if frame.sample_rate != first_rate:
                raise VQTError(
                    f"{path}: sample rate changes mid-stream ({first_rate} -> {frame.sample_rate} Hz)"
                )
            mono = reduce(_frame_samples(frame), "c n -> n", "mean")
            yield torch.from_numpy(np.ascontiguousarray(mono)), frame.sample_rate, frame.layout.nb_channels


def _no_samples(path: Path) -> VQTError:
    return VQTError(f"{path}: audio stream holds no samples")


def read_audio(path: str | Path, sample_rate: int = 16000) -> tuple[Tensor, dict[str, Any]]:
    """Decode an audio file (or a video's audio track) as float32 (1, T) mono in [-1, 1] at `sample_rate`.

    Returns the audio and {"sample_rate", "source_rate", "source_channels", "length": T}.
    """
    path = Path(path)
    pieces = list(_decode(path))
    if not pieces:
        raise _no_samples(path)
    source_rate, source_channels = pieces[0][1], pieces[0][2]
    audio = torch.cat([samples for samples, _, _ in pieces])[None]
    if source_rate != sample_rate:
        audio = AF.resample(audio, source_rate, sample_rate)
    audio = audio.clamp(-1, 1)
    meta = {
        "sample_rate": sample_rate,
        "source_rate": source_rate,
        "source_channels": source_channels,
        "length": audio.shape[-1],
    }
    return audio, meta


class StreamResampler:
    """`torchaudio.functional.resample` applied piece by piece, giving the same samples as on the whole.

    The input is cut into blocks of whole resampling periods (`orig` source samples give `new` output
    samples, the rates divided by their gcd), so every block starts on an output sample. Each block is
    resampled with `context` >= the filter's half-width of real neighbouring samples on both sides and
    trimmed back, so there are no seams; only the very start and end see torchaudio's zero padding, as
    they do on the whole signal. The last block's length follows torchaudio: ceil(n * new / orig) in all.
    """

    def __init__(self, source_rate: int, target_rate: int, block: int | None = None):
        divisor = math.gcd(source_rate, target_rate)
        self.orig, self.new = source_rate // divisor, target_rate // divisor
        width = math.ceil(LOWPASS_FILTER_WIDTH * self.orig / (min(self.orig, self.new) * ROLLOFF))
        self.context = self.orig * math.ceil(width / self.orig)
        block = block or target_rate  # output samples per resample call: about 1 s unless asked otherwise
        self.block_in = self.orig * max(1, math.ceil(block / self.new))  # source samples per block
        self.pending: list[Tensor] = []  # (C, n) source samples from buffer_start on
        self.buffer_start = 0  # source index of the first pending sample
        self.buffer_end = 0  # source samples pushed so far
        self.next_in = 0  # source index where the next output block starts

    def push(self, samples: Tensor) -> Tensor:
        """Add (C, n) source samples; returns the (C, m) output samples now complete (m may be 0)."""
        self.pending.append(samples)
        self.buffer_end += samples.shape[-1]
        outputs = [samples[:, :0]]
        while self.buffer_end >= self.next_in + self.block_in + self.context:
            outputs.append(self._block(self.next_in + self.block_in))
        return torch.cat(outputs, dim=-1)

    def flush(self) -> Tensor:
        """The remaining output samples after the last push."""
        if not self.pending or self.next_in >= self.buffer_end:
            return torch.zeros(self.pending[0].shape[0] if self.pending else 1, 0)
        return self._block(self.buffer_end, last=True)

    def _block(self, end: int, last: bool = False) -> Tensor:
        buffer = torch.cat(self.pending, dim=-1)
        left = max(self.next_in - self.context, 0)  # a multiple of orig, like next_in and context
        stop = self.buffer_end if last else end + self.context
        out = AF.resample(buffer[:, left - self.buffer_start : stop - self.buffer_start], self.orig, self.new)
        offset = (self.next_in - left) // self.orig * self.new
        count = out.shape[-1] - offset if last else (end - self.next_in) // self.orig * self.new
        out = out[:, offset : offset + count]
        self.next_in = end
        keep_from = max(end - self.context, 0)
        self.pending = [buffer[:, keep_from - self.buffer_start :]]
        self.buffer_start = keep_from
        return out


def _rechunk(pieces: Iterable[Tensor], chunk: int) -> Iterator[Tensor]:
    """(C, n) pieces of any sizes -> (C, chunk) pieces, the last one shorter."""
    held: list[Tensor] = []
    count = 0
    for piece in pieces:
        held.append(piece)
        count += piece.shape[-1]
        if count >= chunk:
            joined = torch.cat(held, dim=-1)
            whole = count // chunk * chunk
            yield from joined[:, :whole].split(chunk, dim=-1)
            held, count = [joined[:, whole:]], count - whole
    if count:
        yield torch.cat(held, dim=-1)


def stream_audio(path: str | Path, sample_rate: int = 16000, chunk: int = 160000) -> Iterator[Tensor]:
    """`read_audio`'s samples as float32 (1, <= chunk) pieces, decoding and resampling with bounded memory.

    Their concatenation equals `read_audio(path, sample_rate)[0]` (up to float rounding).
    """
    path = Path(path)
    if chunk < 1:
        raise VQTError(f"chunk must be at least 1 sample, got {chunk}")
    check_file(path, "audio")  # now rather than at the first piece
    return _rechunk(_stream_pieces(path, sample_rate, chunk), chunk)


def _stream_pieces(path: Path, sample_rate: int, chunk: int) -> Iterator[Tensor]:
    resampler, decoded_any = None, False
    for samples, source_rate, _ in _decode(path):
        decoded_any = True
        if source_rate == sample_rate:
            yield samples[None].clamp(-1, 1)
            continue
        resampler = resampler or StreamResampler(source_rate, sample_rate, block=max(chunk, sample_rate))
        yield resampler.push(samples[None]).clamp(-1, 1)
    if not decoded_any:
        raise _no_samples(path)
    if resampler is not None:
        yield resampler.flush().clamp(-1, 1)


class AudioWriter(AtomicWriter):
    """Encode audio progressively to .wav (16-bit PCM), .flac (16-bit) or .opus/.ogg (Opus, 48 kHz).

        with AudioWriter("out.flac", 16000) as writer:
            for chunk in chunks:  # (channels, n) float in [-1, 1], clamped
                writer.write(chunk)

    Opus is encoded at 48 kHz: other rates are resampled on the way (`StreamResampler`, seamless).
    The file appears under its name only once closed without an error (written to a temp file first).
    """

    def __init__(self, path: str | Path, sample_rate: int, channels: int = 1):
        super().__init__(path)
        suffix = self.path.suffix.lower()
        if suffix not in WRITE_FORMATS:
            raise VQTError(f"{self.path}: cannot write audio as '{suffix}' (use {', '.join(WRITE_FORMATS)})")
        if channels not in LAYOUTS:
            raise VQTError(f"{self.path}: can write 1 to {len(LAYOUTS)} channels, got {channels}")
        if sample_rate < 1:
            raise VQTError(f"{self.path}: sample rate must be positive, got {sample_rate}")
        container_format, codec, self.sample_format = WRITE_FORMATS[suffix]
        self.channels = channels
        self.rate = OPUS_RATE if codec == "libopus" else sample_rate
        self.resampler = StreamResampler(sample_rate, self.rate) if self.rate != sample_rate else None
        self.samples_written = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(self.temp), "w", format=container_format)
            self.stream = self.container.add_stream(codec, rate=self.rate, layout=LAYOUTS[channels])
            self.stream.format = self.sample_format
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._discard()
            raise VQTError(f"{self.path}: cannot write audio ({first_line(exc)})") from None

    def write(self, chunk: Tensor) -> None:
        """Encode (channels, n) samples in [-1, 1] (a (n,) tensor counts as one channel)."""
        if self.container is None:
            raise VQTError(f"{self.path}: cannot write audio after the writer is closed")
        chunk = chunk.detach().float().cpu()
        chunk = chunk[None] if chunk.ndim == 1 else chunk
        if chunk.ndim != 2 or chunk.shape[0] != self.channels:
            raise VQTError(f"{self.path}: expected ({self.channels}, n) audio, got {tuple(chunk.shape)}")
        chunk = chunk.clamp(-1, 1)
        if self.resampler is not None:
            chunk = self.resampler.push(chunk).clamp(-1, 1)
        self._encode(chunk)

    def _encode(self, chunk: Tensor | None) -> None:
        try:
            if chunk is None:
                packets = self.stream.encode(None)
            elif chunk.shape[-1] == 0:
                return
            else:
                packets = self.stream.encode(self._frame(chunk))
            self.container.mux(packets)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise VQTError(f"{self.path}: cannot encode audio ({first_line(exc)})") from None

    def _frame(self, chunk: Tensor) -> av.AudioFrame:
        interleaved = rearrange(chunk.numpy(), "c n -> 1 (n c)")
        if self.sample_format == "s16":
            interleaved = np.clip(np.round(interleaved * INT16_SCALE), -INT16_SCALE, INT16_SCALE - 1)
            interleaved = interleaved.astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(interleaved), format=self.sample_format, layout=LAYOUTS[self.channels]
        )
        frame.sample_rate = self.rate
        frame.pts = self.samples_written
        self.samples_written += chunk.shape[-1]
        return frame

    def close(self) -> None:
        """Flush the encoder, finish the file and move it into place."""
        if self.container is None:
            return
        try:
            if self.resampler is not None:
                self._encode(self.resampler.flush().clamp(-1, 1))
            self.container.start_encoding()  # writes the header even when nothing was written
            self._encode(None)
            self._finish()
        except VQTError:
            self._discard()
            raise
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._discard()
            raise VQTError(f"{self.path}: cannot write audio ({first_line(exc)})") from None


def write_audio(
    path: str | Path, audio: Tensor, meta: dict[str, Any] | None = None, sample_rate: int | None = None
) -> None:
    """Write (C, T) audio in [-1, 1] (clamped) as .wav, .flac or .opus/.ogg, chosen by the suffix.

    The rate is `sample_rate`, else meta["sample_rate"]. With `meta` from `read_audio`, the audio is cut
    to meta["length"], which undoes padding added at the end. Parent folders are created.
    """
    path = Path(path)
    meta = meta or {}
    rate = sample_rate or meta.get("sample_rate")
    if not rate:
        raise VQTError(f"{path}: no sample rate given (pass sample_rate or meta['sample_rate'])")
    audio = audio[None] if audio.ndim == 1 else audio
    if audio.ndim != 2:
        raise VQTError(f"{path}: can only write (C, T) audio, got {tuple(audio.shape)}")
    if "length" in meta:
        audio = audio[:, : int(meta["length"])]
    with AudioWriter(path, int(rate), channels=audio.shape[0]) as writer:
        for piece in audio.split(OPUS_RATE * 10, dim=-1):
            writer.write(piece)
