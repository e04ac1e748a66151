"""Reading and writing images, IDX files (MNIST-style) and .npz arrays.

Images are float32 tensors (C, H, W) in [0, 1]. A file a user hands us that cannot be read raises
`VQTError` with one line naming the file and the problem.
"""

from __future__ import annotations

import gzip
import math
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from vqtoolkit.errors import VQTError
from vqtoolkit.files import atomic_write

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CHANNEL_MODES = {1: "L", 3: "RGB"}
WRITE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
IDX_UINT8 = 0x08
# pixels read at most (8192 x 8192; 8K video frames fit): a small PNG can claim 65000 x 65000 and
# decompress to gigabytes
MAX_PIXELS = 2**26
Image.MAX_IMAGE_PIXELS = None  # PIL's own, looser guard would word the refusal differently; ours comes first


def _check_channels(channels: int) -> None:
    if channels not in CHANNEL_MODES:
        raise VQTError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _missing(path: Path) -> VQTError:
    return VQTError(f"{path}: no such file or directory")


@contextmanager
def _reading_image(path: Path) -> Iterator[None]:
    """Turn what PIL raises for a missing, foreign, truncated or corrupt file into one-line VQTErrors."""
    if not path.exists():
        raise _missing(path)
    if path.is_dir():
        raise VQTError(f"{path}: is a directory, not an image file")
    if path.stat().st_size == 0:
        raise VQTError(f"{path}: empty file")
    try:
        yield
    except UnidentifiedImageError:
        raise VQTError(f"{path}: not a readable image (cannot identify image file)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise VQTError(f"{path}: not a readable image ({_first_line(exc)})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file, reading its header only."""
    path = Path(path)
    with _reading_image(path), Image.open(path) as image:
        return image.height, image.width


def read_image(path: str | Path, channels: int = 1) -> tuple[Tensor, dict[str, Any]]:
    """Read a PNG, JPEG, BMP or WebP file as float32 (channels, H, W) in [0, 1].

    `channels` 1 converts to grey (PIL's 'L', ITU-R 601 luma), 3 to RGB; alpha is dropped.
    16-bit grey PNGs keep their precision (scaled by 1/65535). The EXIF orientation is applied (a phone
    photo comes out the right way up). An animated image gives its first frame. An image of more than
    MAX_PIXELS pixels is refused before it is decompressed. Returns the image and
    {"height": H, "width": W}, plus "note" when the user should know what was read (the first frame).
    """
    _check_channels(channels)
    path = Path(path)
    note = ""
    with _reading_image(path):
        with Image.open(path) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise VQTError(
                    f"{path}: {opened.width} x {opened.height} pixels is more than vqt reads "
                    f"({MAX_PIXELS:,} pixels); scale it down first"
                )
            frames = getattr(opened, "n_frames", 1)
            if frames > 1:
                note = f"animated image of {frames} frames: the first one was used"
            opened.load()
            image = ImageOps.exif_transpose(opened)
            if image.mode in ("I", "I;16", "I;16B", "I;16L") and channels == 1:
                array = np.asarray(image, dtype=np.float32) / 65535.0
            else:
                array = np.asarray(image.convert(CHANNEL_MODES[channels]), dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = rearrange(torch.from_numpy(np.ascontiguousarray(array)), "h w c -> c h w")
    meta = {"height": tensor.shape[1], "width": tensor.shape[2]}
    return tensor, ({**meta, "note": note} if note else meta)


def write_image(path: str | Path, image: Tensor, meta: dict[str, Any] | None = None) -> None:
    """Write a (C, H, W) image in [0, 1] with C = 1, 3 or 4; values are clamped and rounded to uint8.

    The format follows the suffix (any format PIL writes; PNG when the suffix is missing or unknown).
    With `meta` from `read_image`, the image is cropped to meta's height and width, which undoes
    padding added at the bottom/right. Parent folders are created.
    """
    path = Path(path)
    if image.ndim != 3 or image.shape[0] not in WRITE_MODES:
        shape = tuple(image.shape)
        raise VQTError(f"{path}: can only write (C, H, W) images with 1, 3 or 4 channels, got {shape}")
    if meta and "height" in meta and "width" in meta:
        image = image[:, : int(meta["height"]), : int(meta["width"])]
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    array = rearrange(pixels, "c h w -> h w c").numpy()
    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array, WRITE_MODES[array.shape[2]])
    image_format = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    if image_format == "JPEG" and picture.mode == "RGBA":
        picture = picture.convert("RGB")
    options = {"quality": 95} if image_format in ("JPEG", "WEBP") else {}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # through a temporary file: a full disk or a kill never leaves a truncated picture under `path`
        atomic_write(path, lambda tmp: picture.save(tmp, format=image_format, **options))
    except (OSError, ValueError, KeyError) as exc:
        raise VQTError(f"{path}: cannot write image ({_first_line(exc)})") from None


def read_idx(path: str | Path) -> Tensor:
    """Read an IDX file (MNIST's format; gzipped or plain) of unsigned bytes as a uint8 tensor.

    The header is two zero bytes, the type byte 0x08, the number of dimensions and then each
    dimension as a big-endian uint32; the data must hold exactly their product in bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise VQTError(f"{path}: not a readable IDX file ({_first_line(exc)})") from None
    if len(data) < 4 or data[:2] != b"\0\0":
        raise VQTError(f"{path}: not an IDX file (bad magic number)")
    if data[2] != IDX_UINT8:
        raise VQTError(f"{path}: IDX data type 0x{data[2]:02x} is not supported (only unsigned bytes, 0x08)")
    rank = data[3]
    header_size = 4 + 4 * rank
    if rank == 0 or len(data) < header_size:
        raise VQTError(f"{path}: IDX header is truncated or has no dimensions")
    shape = struct.unpack(f">{rank}I", data[4:header_size])
    if len(data) - header_size != math.prod(shape):
        raise VQTError(
            f"{path}: IDX header says {list(shape)} ({math.prod(shape)} bytes) "
            f"but the file holds {len(data) - header_size} bytes of data"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)
    return torch.from_numpy(array.copy())


def read_npz(path: str | Path) -> Tensor:
    """Read images from an .npz file as an (N, C, H, W) tensor: uint8 as is, floats as float32 in [0, 1].

    The file holds one array (or several, one of them named `images`), shaped (N, H, W), (N, H, W, C)
    or (N, C, H, W) with C in 1, 3, 4. A 4-D array is channels-first when its axis 1 has 1, 3 or 4
    entries, else channels-last.
    """
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if len(names) != 1 and "images" not in names:
                raise VQTError(f"{path}: expected one array (or one named 'images'), found {names}")
            array = archive["images" if "images" in names else names[0]]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
        raise VQTError(f"{path}: not a readable .npz file ({_first_line(exc)})") from None
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[1] not in (1, 3, 4):
        if array.shape[3] not in (1, 3, 4):
            raise VQTError(f"{path}: cannot tell the channel axis of an array shaped {array.shape}")
        array = rearrange(array, "n h w c -> n c h w")
    elif array.ndim != 4:
        raise VQTError(f"{path}: expected images shaped (N, H, W) or (N, H, W, C), got {array.shape}")
    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(array))
    if not np.issubdtype(array.dtype, np.floating):
        raise VQTError(f"{path}: images must be uint8 or floating point in [0, 1], got {array.dtype}")
    images = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if images.numel() and (images.min() < 0 or images.max() > 1 or images.isnan().any()):
        low, high = images.min().item(), images.max().item()
        raise VQTError(f"{path}: float images must lie in [0, 1], found values in [{low}, {high}]")
    return images
