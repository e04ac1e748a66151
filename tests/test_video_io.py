"""Video I/O through PyAV on real files made on the fly (h264, vp9, av1, mpeg4 in mp4/mov/mkv/webm/avi)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from einops import rearrange
from vqt_speech.io import read_audio
from vqt_video.dataset import SAMPLE_FILE, SAMPLE_FILES, video_dataset
from vqt_video.io import (
    VIDEO_EXTENSIONS,
    VideoWriter,
    read_video,
    read_video_uint8,
    stream_video,
    video_info,
    write_video,
)

from vqtoolkit.errors import VQTError

NTSC = Fraction(24000, 1001)


def pattern(frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8: smooth colour gradients with a bright square moving one pixel per frame."""
    y, x = np.mgrid[0:height, 0:width]
    video = np.zeros((frames, height, width, 3), np.uint8)
    for t in range(frames):
        video[t, ..., 0] = 40 + 160 * x / width
        video[t, ..., 1] = 40 + 160 * y / height
        video[t, ..., 2] = 120
        top, left = t % (height - 8), (2 * t) % (width - 8)
        video[t, top : top + 8, left : left + 8] = 230
    return video


def encode(
    path: Path, codec: str, frames: np.ndarray, rate: Fraction | int, options: dict | None = None
) -> Path:
    """Write (T, H, W, 3) uint8 frames with a PyAV encoder; the container follows the suffix."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = options or {}
        stream.codec_context.time_base = 1 / Fraction(rate)
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, 1 / Fraction(rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def as_video(frames: np.ndarray) -> torch.Tensor:
    return rearrange(torch.from_numpy(frames), "t h w c -> c t h w").float() / 255


CODECS = [  # suffix, encoder, options, frame rate
    (".mp4", "libx264", {"crf": "18"}, NTSC),
    (".mov", "libx264", {"crf": "18"}, 25),
    (".mkv", "libx264", {"crf": "18"}, NTSC),
    (".mkv", "libvpx-vp9", {"crf": "20", "b": "0"}, 30),
    (".webm", "libvpx-vp9", {"crf": "20", "b": "0"}, NTSC),
    (".mp4", "libsvtav1", {"crf": "25"}, 25),
    (".avi", "mpeg4", {"b": "2M"}, 25),
]


@pytest.mark.parametrize(
    "suffix, codec, options, rate", CODECS, ids=[f"{s[1:]}-{c}" for s, c, _, _ in CODECS]
)
def test_reads_every_container_and_codec(tmp_path, suffix, codec, options, rate):
    if codec == "libsvtav1" and "libsvtav1" not in av.codecs_available:
        pytest.skip("this PyAV build has no AV1 encoder (libsvtav1)")
    source = pattern(12, 30, 46)  # neither side divisible by 4
    path = encode(tmp_path / f"clip{suffix}", codec, source, rate, options)
    video, meta = read_video(path)
    assert video.dtype == torch.float32 and video.shape == (3, 12, 30, 46)
    assert 0 <= video.min() and video.max() <= 1
    assert meta == {"fps": pytest.approx(float(rate)), "frames": 12, "height": 30, "width": 46}
    info = video_info(path)
    assert info["fps"] == pytest.approx(float(rate)) and (info["height"], info["width"]) == (30, 46)
    assert info["frames"] in (12, None) and not info["has_audio"]
    assert (video - as_video(source)).abs().mean() < 0.03  # about 0.01 here, mostly from yuv420p chroma


def test_odd_size_and_single_frame(tmp_path):
    odd = encode(tmp_path / "odd.webm", "libvpx-vp9", pattern(5, 31, 45), 25, {"crf": "20", "b": "0"})
    assert read_video(odd)[0].shape == (3, 5, 31, 45)
    single = encode(tmp_path / "one.mp4", "libx264", pattern(1, 30, 46), 25)
    video, meta = read_video(single)
    assert video.shape == (3, 1, 30, 46) and meta["frames"] == 1
    assert [piece.shape[1] for piece in stream_video(single, chunk=4)] == [1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """20 frames of 32x48 at 24000/1001 fps in mp4."""
    return encode(tmp_path_factory.mktemp("clip") / "clip.mp4", "libx264", pattern(20, 32, 48), NTSC)


@pytest.mark.parametrize("options", [{}, {"size": [16, 24]}, {"fps": 10.0}, {"size": [20, 20], "fps": 60.0}])
def test_stream_pieces_equal_read_video(clip, options):
    whole, _ = read_video(clip, **options)
    pieces = list(stream_video(clip, chunk=6, **options))
    assert all(piece.shape[1] <= 6 for piece in pieces) and len(pieces) == -(-whole.shape[1] // 6)
    assert torch.equal(torch.cat(pieces, dim=1), whole)


def test_resize_resample_and_max_frames(clip):
    video, meta = read_video(clip, size=[16, 24])
    assert video.shape == (3, 20, 16, 24) and (meta["height"], meta["width"]) == (16, 24)
    half, meta = read_video(clip, fps=float(NTSC) / 2)
    full, _ = read_video(clip)
    assert meta["fps"] == pytest.approx(float(NTSC) / 2) and half.shape[1] == 10
    assert torch.equal(half, full[:, ::2])  # dropping every other frame
    double, _ = read_video(clip, fps=float(NTSC) * 2)
    assert double.shape[1] == 40 and torch.equal(double, full.repeat_interleave(2, dim=1))
    same, _ = read_video(clip, fps=float(NTSC))
    assert torch.equal(same, full)
    assert read_video(clip, max_frames=7)[0].shape[1] == 7
    with pytest.raises(VQTError, match="size"):
        read_video(clip, size=[16])


@pytest.mark.parametrize("fps", [float(NTSC), 25.0])
def test_writer_round_trip_keeps_fps_and_frames(tmp_path, fps):
    source = as_video(pattern(13, 32, 48))
    path = tmp_path / "out.mp4"
    with VideoWriter(path, fps, 32, 48) as writer:
        for piece in source.split(5, dim=1):
            writer.write(piece)
    video, meta = read_video(path)
    assert meta == {"fps": pytest.approx(fps), "frames": 13, "height": 32, "width": 48}
    assert av.open(str(path)).streams.video[0].average_rate == Fraction(fps).limit_denominator(100000)
    assert (video - source).abs().mean() < 0.03
    assert not list(tmp_path.glob(".*.tmp"))


def test_writer_pads_odd_sizes_and_takes_size_from_first_piece(tmp_path):
    source = as_video(pattern(4, 31, 45))
    path = tmp_path / "odd.mkv"
    with VideoWriter(path, 25) as writer:  # height/width from the first piece
        writer.write(source)
    video, _ = read_video(path)
    assert video.shape == (3, 4, 32, 46)  # padded by one replicated row and column
    assert (video[..., :31, :45] - source).abs().mean() < 0.03
    assert (video[..., 31, :45] - source[..., 30, :]).abs().mean() < 0.05


def test_writer_with_audio_track(tmp_path):
    path = tmp_path / "av.mp4"
    tone = torch.sin(torch.arange(16000) * 2 * torch.pi * 440 / 16000)[None] * 0.5
    with VideoWriter(path, 25, 32, 48, audio_rate=16000) as writer:
        writer.write_audio(tone[:, :7000])  # before any frame: held until the file opens
        writer.write(as_video(pattern(25, 32, 48)))
        writer.write_audio(tone[:, 7000:])
    info = video_info(path)
    assert info["has_audio"] and info["frames"] == 25
    audio, meta = read_audio(path, 16000)
    assert abs(meta["length"] - 16000) < 2048  # AAC adds up to a frame of padding
    assert audio.abs().max() > 0.3


def test_write_video_and_writer_errors(tmp_path):
    source = as_video(pattern(3, 32, 48))
    write_video(tmp_path / "w.mov", source, {"fps": 12.5})
    assert video_info(tmp_path / "w.mov")["fps"] == pytest.approx(12.5)
    with pytest.raises(VQTError, match=r"x\.gif: cannot write video as '\.gif'"):
        VideoWriter(tmp_path / "x.gif", 25, 32, 48)
    with pytest.raises(VQTError, match="no video frames"):
        with VideoWriter(tmp_path / "none.mp4", 25, 32, 48):
            pass
    with pytest.raises(VQTError, match=r"expected \(3, n, 32, 48\)"):
        with VideoWriter(tmp_path / "shape.mp4", 25, 32, 48) as writer:
            writer.write(torch.zeros(3, 2, 16, 16))
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "none.mp4").exists()


def audio_only(path: Path, codec: str, sample_format: str) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=16000, layout="mono")
        samples = np.zeros((1, 4000), np.float32 if sample_format == "fltp" else np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format=sample_format, layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / {"audio-only": "sound.m4a", "wav-as-mkv": "sound.mkv"}.get(kind, f"{kind}.mp4")
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        whole = encode(tmp_path / "whole.mp4", "libx264", pattern(10, 32, 48), 25).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif kind == "audio-only":
        audio_only(path, "aac", "fltp")
    elif kind == "wav-as-mkv":
        os.replace(audio_only(tmp_path / "sound.wav", "pcm_s16le", "s16"), path)
    return path


BAD = [
    ("missing", "no such file"),
    ("empty", "empty file"),
    ("random", "not a readable video file"),
    ("truncated", "not a readable video file"),
    ("audio-only", "no video stream"),
    ("wav-as-mkv", "no video stream"),
]


@pytest.mark.parametrize("kind, problem", BAD, ids=[kind for kind, _ in BAD])
def test_bad_files_raise_one_line_naming_the_file(tmp_path, kind, problem):
    path = bad_file(tmp_path, kind)
    readers = [video_info, read_video, lambda p: list(stream_video(p))]
    if path.suffix in VIDEO_EXTENSIONS:
        readers.append(lambda p: video_dataset(str(p), "train", 3))
    for read in readers:
        with pytest.raises(VQTError) as caught:
            read(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


def test_shipped_clip_dataset():
    info = video_info(SAMPLE_FILE)
    assert info["has_audio"] and (info["height"], info["width"]) == (64, 64) and info["frames"] == 132
    frames = [video_info(file)["frames"] for file in SAMPLE_FILES]
    assert frames == [132, 795, 68]  # Big Buck Bunny, OpenCV's pedestrians and tree
    train, test = video_dataset("", "train", 3), video_dataset("", "test", 3)
    # each file's first 80% is train and its last 20% test, 8 frames at a time: 106 + 636 + 54 frames, then
    # 26 + 159 + 14
    assert len(train) == 13 + 79 + 6 and len(test) == 3 + 19 + 1
    whole, _ = read_video_uint8(SAMPLE_FILES[1], [64, 64], 0.0)
    assert torch.equal(test[3], whole[:, 636:644].float() / 255)  # the pedestrians' first held-out clip
    item = train[0]
    assert item.shape == (3, 8, 64, 64) and item.dtype == torch.float32 and 0 <= item.min() <= item.max() <= 1
    assert len(video_dataset("", "train", 3, frames=4, size=[32, 32], hop=2)[0].shape) == 4
    with pytest.raises(VQTError, match="data.channels: video is RGB; use 3"):
        video_dataset("", "train", 1)


def test_file_split_by_frames_is_decoded_once_for_both_splits(monkeypatch):
    import gc

    import vqt_video.dataset as dataset_module

    decoded = []

    def counting(file, size, fps):
        decoded.append((Path(file).name, tuple(size)))
        return read_video_uint8(file, size, fps)

    monkeypatch.setattr(dataset_module, "read_video_uint8", counting)
    train, test = video_dataset("", "train", 3), video_dataset("", "test", 3)
    assert sorted(decoded) == sorted((file.name, (64, 64)) for file in SAMPLE_FILES)
    whole, _ = read_video_uint8(SAMPLE_FILES[0], [64, 64], 0.0)
    assert torch.equal(test[0], whole[:, 106:114].float() / 255) and torch.equal(train[0], whole[:, :8] / 255)
    video_dataset("", "test", 3, size=[32, 32])  # another size: decoded anew
    assert len(decoded) == 2 * len(SAMPLE_FILES)
    del train, test
    gc.collect()
    video_dataset("", "train", 3)  # nothing holds the decoded videos now: nothing kept after the datasets
    assert len(decoded) == 3 * len(SAMPLE_FILES)


def test_folder_dataset_splits_and_errors(tmp_path):
    for name in ("a.mp4", "b.mkv", "sub/c.mp4"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        encode(tmp_path / name, "libx264", pattern(10, 32, 48), 25)
    (tmp_path / "notes.txt").write_text("not a video")
    train = video_dataset(str(tmp_path), "train", 3, frames=4, size=[16, 16])
    test = video_dataset(str(tmp_path), "test", 3, frames=4, size=[16, 16], hop=3)
    assert len(train) == 2 * 2 and len(test) == 3  # a, b: 2 clips each; sub/c (last): starts 0, 3, 6
    assert test[2].shape == (3, 4, 16, 16)
    # by frames: every file's first 8 frames train (4 clips of 2), its last 2 test (1 clip)
    by_frames = {split: video_dataset(str(tmp_path), split, 3, frames=2, size=[16, 16], split_by="frames")
                 for split in ("train", "test")}  # fmt: skip
    assert len(by_frames["train"]) == 3 * 4 and len(by_frames["test"]) == 3
    whole, _ = read_video_uint8(tmp_path / "b.mkv", [16, 16], 0.0)
    assert torch.equal(by_frames["test"][1], whole[:, 8:10].float() / 255)
    assert len(video_dataset("", "test", 3, split_by="files")) == 68 // 8  # the sample's last file, tree
    with pytest.raises(VQTError, match=r"a.mp4: data.split_by=files needs 2 or more files"):
        video_dataset(str(tmp_path / "a.mp4"), "train", 3, split_by="files")
    with pytest.raises(VQTError, match="data.split_by must be 'auto', 'files' or 'frames', got 'scenes'"):
        video_dataset(str(tmp_path), "train", 3, split_by="scenes")
    (tmp_path / "mixed").mkdir()
    encode(tmp_path / "mixed" / "a.mp4", "libx264", pattern(10, 32, 48), 25)
    encode(tmp_path / "mixed" / "b.mp4", "libx264", pattern(10, 16, 16), 25)
    with pytest.raises(VQTError, match=r"b.mp4: video is 16x16 \(HxW\) but a.mp4 is 32x48; set data.size"):
        video_dataset(str(tmp_path / "mixed"), "train", 3, frames=2, size=[], split_by="frames")
    with pytest.raises(VQTError, match="no clip of data.frames=11"):
        video_dataset(str(tmp_path), "train", 3, frames=11)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VQTError, match="folder holds no video files"):
        video_dataset(str(tmp_path / "empty"), "train", 3)
