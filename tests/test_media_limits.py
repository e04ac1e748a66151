"""Media the toolkit is handed: decompression bombs, EXIF orientation, animated images, several tracks."""

import struct
import zlib

import av
import numpy as np
import pytest
from conftest import vqt
from PIL import Image
from test_bad_inputs import assert_one_line_error
from vqt_image.io import MAX_PIXELS, read_image

pytestmark = pytest.mark.hostile("media")


def bomb_png(width: int, height: int) -> bytes:
    """A PNG header claiming a 1-bit width x height image, with a tiny zlib stream for its pixels (a real
    bomb would compress all of them into a few KB; the reader must refuse it before decompressing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    pixels = zlib.compress(bytes(2**16))  # the first rows of zeros
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(12000, 12000), (8193, 8192), (2**22, 17), (17, 2**22), (65000, 65000)])
def test_a_decompression_bomb_is_refused_before_it_is_decompressed(tiny_image_run, tmp_path, size):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(*size))
    assert path.stat().st_size < 2**12 and size[0] * size[1] > MAX_PIXELS
    assert Image.open(path).size == size
    result = vqt("tokenize", path, "--model", tiny_image_run, "-o", tmp_path / "b.codes")
    assert_one_line_error(result, path, f"{size[0]} x {size[1]} pixels is more than vqt reads")
    assert not (tmp_path / "b.codes").exists()


@pytest.mark.parametrize("orientation, shape", [(1, (20, 10)), (3, (20, 10)), (6, (10, 20)), (8, (10, 20))])
def test_exif_orientation_is_applied(tmp_path, orientation, shape):
    pixels = np.zeros((20, 10), dtype=np.uint8)
    pixels[0, 0] = 255  # a marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=100)
    image, meta = read_image(path)
    assert tuple(image.shape[1:]) == shape and (meta["height"], meta["width"]) == shape
    corner = {1: (0, 0), 3: (19, 9), 6: (0, 19), 8: (9, 0)}[orientation]  # where the marker is shown
    assert image[0][corner] > 0.5


@pytest.mark.parametrize("suffix", [".png", ".webp"])
def test_an_animated_image_says_which_frame_was_used(tiny_image_run, tmp_path, suffix):
    frames = [Image.fromarray(np.full((28, 28), value, dtype=np.uint8)) for value in (0, 128, 255)]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, lossless=True)
    result = vqt("tokenize", path, "--model", tiny_image_run, "-o", tmp_path / "a.codes")
    assert result.returncode == 0, result.stderr
    assert f"note: {path}: animated image of 3 frames: the first one was used" in result.stderr
    assert read_image(path)[0].max() == 0  # the first frame, all black


def test_a_file_with_two_audio_tracks_says_which_was_used(tiny_speech_run, tmp_path):
    path = tmp_path / "two.mkv"  # a Matroska file holding two audio tracks and no video
    with av.open(str(path), "w", format="matroska") as container:
        streams = [container.add_stream("flac", rate=16000, layout="mono") for _ in range(2)]
        for start in range(0, 16000, 1600):  # interleaved, as a muxer wants them
            for stream, frequency in zip(streams, (220, 440)):
                t = np.arange(start, start + 1600) / 16000
                samples = (np.sin(2 * np.pi * frequency * t) * 8000).astype(np.int16)
                frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
                frame.sample_rate, frame.pts = 16000, start
                container.mux(stream.encode(frame))
        for stream in streams:
            container.mux(stream.encode(None))
    result = vqt("tokenize", path, "--model", tiny_speech_run, "-o", tmp_path / "t.codes")
    assert result.returncode == 0, result.stderr
    assert f"note: {path}: 2 audio tracks: the first one was used" in result.stderr
