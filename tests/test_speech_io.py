"""Speech I/O on real files encoded here with PyAV (every format we read), writing, streaming, the shipped
Asterisk prompts and the speech dataset."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from vqt_speech.dataset import SAMPLE_DIR, speech_dataset
from vqt_speech.io import AudioWriter, StreamResampler, audio_info, read_audio, stream_audio, write_audio

from vqtoolkit.config import option_types
from vqtoolkit.errors import VQTError

LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}
LOSSY_SLACK = 0.05  # seconds: lossy codecs add priming/padding samples

# ---------------------------------------------------------------- helpers


def chirp_mixture(rate: int, channels: int, seconds: float) -> np.ndarray:
    """(channels, n) float32: a different tone plus a rising chirp in every channel, peak below 0.5."""
    t = np.arange(round(rate * seconds)) / rate
    top = min(3000, rate / 2 - 500)
    chirp = np.sin(2 * np.pi * (100 + (top - 100) / (2 * seconds) * t) * t)
    tones = [np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)]
    return np.stack([0.3 * tone + 0.15 * chirp for tone in tones]).astype(np.float32)


def encode(
    path: Path,
    samples: np.ndarray,
    rate: int,
    codec: str,
    container_format: str | None = None,
    video: bool = False,
) -> np.ndarray:
    """Write (C, n) samples with PyAV (plus a small h264 video stream if asked); returns them as 16-bit."""
    quantized = np.round(samples * 32767).astype(np.int16)
    layout = LAYOUTS[samples.shape[0]]
    with av.open(str(path), "w", format=container_format) as container:
        if video:
            picture = container.add_stream("libx264", rate=10)
            picture.width = picture.height = 64
            picture.pix_fmt = "yuv420p"
        sound = container.add_stream(codec, rate=rate, layout=layout)
        if video:
            for index in range(round(10 * samples.shape[1] / rate)):
                image = np.full((64, 64, 3), index * 20, np.uint8)
                container.mux(picture.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(picture.encode(None))
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(quantized.T.reshape(1, -1)), format="s16", layout=layout
        )
        frame.sample_rate, frame.pts = rate, 0
        container.mux(sound.encode(frame))
        container.mux(sound.encode(None))
    return quantized.astype(np.float32) / 32768


def expected_mono(samples: np.ndarray, rate: int, target: int = 16000) -> torch.Tensor:
    mono = torch.from_numpy(samples).mean(0, keepdim=True)
    return mono if rate == target else AF.resample(mono, rate, target)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def write_video_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for _ in range(5):
            black = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            container.mux(stream.encode(black))
        container.mux(stream.encode(None))


# ---------------------------------------------------------------- reading every format

# (suffix, codec, container format, source rate, channels, lossless, with a video stream)
FORMATS = [
    (".wav", "pcm_s16le", None, 8000, 1, True, False),
    (".wav", "pcm_s16le", None, 44100, 2, True, False),
    (".wav", "pcm_s16le", None, 48000, 6, True, False),
    (".flac", "flac", None, 8000, 6, True, False),
    (".flac", "flac", None, 44100, 1, True, False),
    (".flac", "flac", None, 48000, 2, True, False),
    (".mp3", "libmp3lame", None, 8000, 1, False, False),
    (".mp3", "libmp3lame", None, 44100, 2, False, False),
    (".mp3", "libmp3lame", None, 48000, 2, False, False),
    (".ogg", "libopus", None, 48000, 6, False, False),
    (".opus", "libopus", None, 48000, 2, False, False),
    (".opus", "libopus", None, 8000, 1, False, False),
    (".m4a", "aac", None, 44100, 6, False, False),
    (".m4a", "aac", None, 8000, 1, False, False),
    (".aac", "aac", "adts", 48000, 2, False, False),
    (".g722", "g722", "g722", 16000, 1, False, False),
    (".mp4", "aac", None, 44100, 2, False, True),
    (".mkv", "libopus", None, 48000, 2, False, True),
]


@pytest.mark.parametrize(
    "suffix, codec, container_format, rate, channels, lossless, video",
    FORMATS,
    ids=[f"{f[0][1:]}-{f[3]}Hz-{f[4]}ch{'-video' if f[6] else ''}" for f in FORMATS],
)
def test_read_audio_formats(tmp_path, suffix, codec, container_format, rate, channels, lossless, video):
    seconds = 1.0
    path = tmp_path / f"clip{suffix}"
    written = encode(path, chirp_mixture(rate, channels, seconds), rate, codec, container_format, video)

    audio, meta = read_audio(path)

    assert audio.dtype == torch.float32 and audio.shape == (1, meta["length"])
    assert meta["sample_rate"] == 16000 and meta["source_channels"] == channels
    assert meta["source_rate"] == (48000 if codec == "libopus" else rate)  # Opus always decodes at 48 kHz
    assert abs(audio.shape[-1] / 16000 - seconds) <= (0 if lossless else LOSSY_SLACK)
    assert audio.abs().max() <= 1
    expected = expected_mono(written, rate)
    if lossless:
        assert correlation(audio, expected) > 0.99
        assert torch.allclose(audio, expected, atol=1e-5)
    else:  # delays differ by codec; the loudness must survive
        rms, expected_rms = audio.pow(2).mean().sqrt(), expected.pow(2).mean().sqrt()
        assert 0.7 < rms / expected_rms < 1.3
    info = audio_info(path)
    assert info["source_channels"] == channels and info["source_rate"] == meta["source_rate"]
    assert info["duration_seconds"] == pytest.approx(seconds, abs=LOSSY_SLACK)


def test_read_audio_keeps_the_source_rate_when_asked(tmp_path):
    written = encode(tmp_path / "a.wav", chirp_mixture(44100, 2, 0.5), 44100, "pcm_s16le")
    audio, meta = read_audio(tmp_path / "a.wav", sample_rate=44100)
    assert meta == {"sample_rate": 44100, "source_rate": 44100, "source_channels": 2, "length": 22050}
    assert torch.allclose(audio, torch.from_numpy(written).mean(0, keepdim=True), atol=1e-6)


# ---------------------------------------------------------------- streaming


@pytest.mark.parametrize("sample_rate", [16000, 44100, 8000])
def test_stream_audio_equals_read_audio(tmp_path, sample_rate):
    path = tmp_path / "stereo.wav"
    encode(path, chirp_mixture(44100, 2, 3.0), 44100, "pcm_s16le")
    whole, meta = read_audio(path, sample_rate)

    pieces = list(stream_audio(path, sample_rate, chunk=3000))

    assert len(pieces) == math.ceil(meta["length"] / 3000)
    assert all(p.shape == (1, 3000) and p.dtype == torch.float32 for p in pieces[:-1])
    streamed = torch.cat(pieces, dim=-1)
    assert streamed.shape == whole.shape
    assert (streamed - whole).abs().max() < 1e-4


def test_stream_audio_lossy_and_raw(tmp_path):
    for name, codec, fmt, rate in [("s.mp3", "libmp3lame", None, 48000), ("s.g722", "g722", "g722", 16000)]:
        encode(tmp_path / name, chirp_mixture(rate, 1, 2.0), rate, codec, fmt)
        streamed = torch.cat(list(stream_audio(tmp_path / name, chunk=1000)), dim=-1)
        whole, _ = read_audio(tmp_path / name)
        assert streamed.shape == whole.shape and (streamed - whole).abs().max() < 1e-4


@pytest.mark.parametrize("rates", [(44100, 16000), (16000, 48000), (22050, 16000), (7, 3)])
def test_stream_resampler_is_seamless_with_bounded_memory(rates):
    source_rate, target_rate = rates
    noise = torch.rand(2, 30000, generator=torch.Generator().manual_seed(0)) - 0.5
    resampler = StreamResampler(source_rate, target_rate, block=4000)
    outputs, most_buffered = [], 0
    for piece in noise.split(777, dim=-1):
        outputs.append(resampler.push(piece))
        most_buffered = max(most_buffered, sum(p.shape[-1] for p in resampler.pending))
    outputs.append(resampler.flush())
    streamed, reference = torch.cat(outputs, dim=-1), AF.resample(noise, source_rate, target_rate)
    assert streamed.shape == reference.shape == (2, math.ceil(30000 * target_rate / source_rate))
    assert (streamed - reference).abs().max() < 1e-5
    assert most_buffered <= resampler.block_in + 2 * resampler.context + 777


# ---------------------------------------------------------------- writing


def test_write_wav_round_trip_is_exact(tmp_path):
    levels = torch.randint(-32768, 32768, (1, 16000), generator=torch.Generator().manual_seed(1))
    audio = levels.float() / 32768
    write_audio(tmp_path / "out.wav", audio, sample_rate=16000)
    back, meta = read_audio(tmp_path / "out.wav")
    assert meta["source_rate"] == 16000 and torch.equal(back, audio)


def test_write_audio_uses_meta_and_clamps(tmp_path):
    audio = torch.linspace(-2, 2, 12000)[None]
    write_audio(tmp_path / "out.wav", audio, {"sample_rate": 8000, "length": 10000})
    back, meta = read_audio(tmp_path / "out.wav", sample_rate=8000)
    assert meta["source_rate"] == 8000 and meta["length"] == 10000
    assert back.min() == -1 and back.max() == 32767 / 32768  # clamped to the 16-bit range
    assert torch.allclose(back, audio[:, :10000].clamp(-1, 1), atol=1 / 32768)


def test_write_flac_stereo(tmp_path):
    stereo = torch.from_numpy(chirp_mixture(44100, 2, 1.0))
    write_audio(tmp_path / "out.flac", stereo, sample_rate=44100)
    back, meta = read_audio(tmp_path / "out.flac", sample_rate=44100)
    assert meta["source_channels"] == 2 and meta["length"] == 44100
    assert (back - stereo.mean(0, keepdim=True)).abs().max() < 1 / 32768


@pytest.mark.parametrize("suffix", [".opus", ".ogg"])
def test_write_opus_resamples_to_48k(tmp_path, suffix):
    speech_like = torch.from_numpy(chirp_mixture(16000, 1, 1.5))
    write_audio(tmp_path / f"out{suffix}", speech_like, sample_rate=16000)
    back, meta = read_audio(tmp_path / f"out{suffix}")
    assert meta["source_rate"] == 48000
    assert abs(meta["length"] - 24000) <= LOSSY_SLACK * 16000
    n = min(back.shape[-1], 24000)
    assert correlation(back[:, :n], speech_like[:, :n]) > 0.95


def test_audio_writer_streams_the_same_file(tmp_path):
    audio = torch.from_numpy(chirp_mixture(22050, 2, 1.0))
    with AudioWriter(tmp_path / "chunks.wav", 22050, channels=2) as writer:
        for piece in audio.split(1000, dim=-1):
            writer.write(piece)
    write_audio(tmp_path / "whole.wav", audio, sample_rate=22050)
    assert (tmp_path / "chunks.wav").read_bytes() == (tmp_path / "whole.wav").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks.wav", "whole.wav"]  # no temp files left


def test_writing_mistakes_are_vqterrors(tmp_path):
    with pytest.raises(VQTError, match=r"out\.mp3: cannot write audio as '\.mp3'"):
        write_audio(tmp_path / "out.mp3", torch.zeros(1, 100), sample_rate=16000)
    with pytest.raises(VQTError, match="no sample rate"):
        write_audio(tmp_path / "out.wav", torch.zeros(1, 100))
    with pytest.raises(VQTError, match=r"expected \(1, n\) audio"):
        with AudioWriter(tmp_path / "out.wav", 16000) as writer:
            writer.write(torch.zeros(2, 100))
    assert not list(tmp_path.iterdir())  # a failed write leaves nothing behind


# ---------------------------------------------------------------- bad inputs


def make_bad_inputs(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    names = ["missing.wav", "empty.wav", "noise.wav", "noise.mp3", "header.wav", "video.mp4", "silent.wav"]
    files = {name: folder / name for name in names}
    files["empty.wav"].write_bytes(b"")
    files["noise.wav"].write_bytes(rng.bytes(4000))
    files["noise.mp3"].write_bytes(rng.bytes(4000))
    encode(folder / "full.wav", chirp_mixture(16000, 1, 0.5), 16000, "pcm_s16le")
    files["header.wav"].write_bytes((folder / "full.wav").read_bytes()[:44])  # header only, data cut off
    write_video_only(files["video.mp4"])
    with AudioWriter(files["silent.wav"], 16000):  # a valid wav holding zero samples
        pass
    return files


@pytest.mark.parametrize(
    "name, problem",
    [
        ("missing.wav", "no such file"),
        ("empty.wav", "empty file"),
        ("noise.wav", "not a readable audio file"),
        ("noise.mp3", "not a readable audio file"),
        ("header.wav", "not a readable audio file"),
        ("video.mp4", "no audio stream"),
        ("silent.wav", "holds no samples"),
    ],
)
def test_bad_inputs_raise_one_line_naming_the_file(tmp_path, name, problem):
    path = make_bad_inputs(tmp_path)[name]
    readers = [read_audio, lambda p: list(stream_audio(p))]
    if name != "silent.wav":  # the header alone cannot tell an empty stream
        readers.append(audio_info)
    for reader in readers:
        with pytest.raises(VQTError) as caught:
            reader(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


# ---------------------------------------------------------------- shipped data and the dataset


def test_shipped_prompts_load():
    files = sorted(SAMPLE_DIR.glob("*.g722"))
    assert len(files) == 67 and (SAMPLE_DIR / "README.md").is_file()
    assert 2.5e6 < sum(f.stat().st_size for f in files) < 3.2e6
    train, test = speech_dataset("", "train", 1), speech_dataset("", "test", 1)
    assert len(train.clips) == 61 and len(test.clips) == 6
    assert len(train) > 300 and len(test) > 20
    for dataset in (train, test):
        item = dataset[len(dataset) // 2]
        assert item.shape == (1, 16384) and item.dtype == torch.float32
        assert item.abs().max() <= 1 and item.std() > 0.01  # real speech, not silence
    seconds = sum(c.shape[-1] for c in train.clips + test.clips) / 16000
    assert 5 * 60 < seconds < 7.5 * 60  # includes the zero padding of each prompt's last segment


def test_speech_dataset_splits_files_and_tiles_segments(tmp_path):
    for index in range(12):  # 0.5 s to 1.6 s
        encode(tmp_path / f"{index:02d}.wav", chirp_mixture(8000, 1, 0.5 + 0.1 * index), 8000, "pcm_s16le")
    (tmp_path / "notes.txt").write_text("not audio")

    train = speech_dataset(str(tmp_path), "train", 1, segment=4000, hop=2000)
    test = speech_dataset(str(tmp_path), "test", 1, segment=4000)

    assert [c.shape[-1] for c in test.clips] == [4000 * math.ceil(1.4 * 16000 / 4000)]  # file 09 only
    assert len(train.clips) == 11
    expected = sum(
        math.ceil(max(round((0.5 + 0.1 * i) * 16000) - 4000, 0) / 2000) + 1 for i in range(12) if i != 9
    )
    assert len(train) == expected
    first = read_audio(tmp_path / "00.wav")[0]  # 8000 samples at 16 kHz
    assert torch.equal(train[0], first[:, :4000]) and torch.equal(train[1], first[:, 2000:6000])
    second = read_audio(tmp_path / "01.wav")[0]  # 9600 samples: segments at 0, 2000, 4000 (first), then
    assert torch.equal(train[3], second[:, :4000])  # 0, 2000, 4000, 6000 (second), the last one padded
    assert torch.equal(train[6][:, :3600], second[:, 6000:]) and not train[6][:, 3600:].any()
    whole_files = speech_dataset(str(tmp_path), "train", 1, segment=32000)  # longer than any file
    assert len(whole_files) == 11 and torch.equal(whole_files[0][:, :8000], first)
    assert not whole_files[0][:, 8000:].any()


def test_speech_dataset_single_file_holds_out_its_end(tmp_path):
    encode(tmp_path / "one.flac", chirp_mixture(16000, 2, 2.0), 16000, "flac")
    train = speech_dataset(str(tmp_path / "one.flac"), "train", 1, segment=1000)
    test = speech_dataset(str(tmp_path / "one.flac"), "test", 1, segment=1000)
    assert len(train) == 29 and len(test) == 4  # 28800 and 3200 samples
    whole, _ = read_audio(tmp_path / "one.flac")
    assert torch.equal(test[0], whole[:, 28800:29800])


def test_speech_dataset_options_and_mistakes(tmp_path):
    types, open_ended = option_types(speech_dataset)
    assert types == {"sample_rate": int, "segment": int, "hop": int} and not open_ended
    with pytest.raises(VQTError, match="data.channels: speech is mono; use 1"):
        speech_dataset("", "train", 2)
    with pytest.raises(VQTError, match="no such file"):
        speech_dataset(str(tmp_path / "nowhere"), "train", 1)
    with pytest.raises(VQTError, match="holds no audio"):
        speech_dataset(str(tmp_path), "train", 1)
    with pytest.raises(VQTError, match="split must be"):
        speech_dataset("", "valid", 1)


def test_speech_dataset_few_files_hold_out_the_last(tmp_path):
    for index in range(3):
        encode(tmp_path / f"{index}.wav", chirp_mixture(16000, 1, 0.25 * (index + 1)), 16000, "pcm_s16le")
    test = speech_dataset(str(tmp_path), "test", 1, segment=4000)
    train = speech_dataset(str(tmp_path), "train", 1, segment=4000)
    assert [c.shape[-1] for c in train.clips] == [4000, 8000] and [c.shape[-1] for c in test.clips] == [12000]
