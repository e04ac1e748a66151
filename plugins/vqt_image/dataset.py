"""Image datasets: a folder of image files, an MNIST-style IDX folder, one image or an .npz file.

Splits: an IDX folder has its own train (`train-images-idx3-ubyte`) and test (`t10k-images-idx3-ubyte`)
files. Every other source holds out its last 10% (at least one item; sorted file order for folders)
as "test" and keeps the rest as "train"; a source with a single image uses it for both splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from vqt_image.io import IMAGE_EXTENSIONS, image_size, read_idx, read_image, read_npz
from vqtoolkit.errors import VQTError
from vqtoolkit.inference.stream import pad_to_multiple as pad_grid

SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "fashion_mnist_small"
IDX_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights PIL's convert("L") uses
ResizeMode = Literal["resize", "pad", "crop"]


def to_channels(images: Tensor, channels: int) -> Tensor:
    """(N, C, H, W), C in 1, 3, 4 -> (N, channels, H, W): grey repeated, RGB to luma, alpha dropped."""
    have = images.shape[1]
    if have == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).clone() if have == 1 else images[:, :3].contiguous()
    weights = torch.tensor(LUMA).view(1, 3, 1, 1)
    grey = (images[:, :3].float() * weights).sum(1, keepdim=True)
    return grey.round().clamp(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else grey


def fit(image: Tensor, size: tuple[int, int], mode: ResizeMode) -> Tensor:
    """Bring a (C, H, W) image to `size`.

    resize: stretch to exactly H x W (bilinear, antialiased; the aspect ratio may change).
    pad: shrink (keeping the aspect ratio) only if larger than H x W, then zero-pad, centred.
    crop: enlarge (keeping the aspect ratio) only if smaller than H x W, then crop the centre.
    """
    import torchvision.transforms.v2.functional as TF  # ~160 MB resident: load it only when resizing

    height, width = image.shape[-2:]
    if (height, width) == size:
        return image
    if mode == "resize":
        return TF.resize(image, list(size), antialias=True).clamp(0, 1)
    shrink = min(size[0] / height, size[1] / width)
    grow = max(size[0] / height, size[1] / width)
    scale = min(shrink, 1.0) if mode == "pad" else max(grow, 1.0)
    if scale != 1.0:
        new_size = [max(1, round(height * scale)), max(1, round(width * scale))]
        image = TF.resize(image, new_size, antialias=True).clamp(0, 1)
    return TF.center_crop(image, list(size))  # pads with zeros where the image is smaller


def pad_to_multiple(image: Tensor, multiple: int) -> Tensor:
    """Replicate the last row/column so that H and W become multiples of `multiple` (bottom/right)."""
    return pad_grid(image[None], (multiple, multiple))[0]


class ImageDataset(Dataset):
    """Images as float32 (C, H, W) in [0, 1], all of one size.

    `source` is either an (N, C, H, W) tensor held in memory (uint8, or float in [0, 1]) or a list
    of image files decoded one per item.
    """

    def __init__(
        self,
        source: Tensor | list[Path],
        channels: int,
        size: tuple[int, int] | None = None,
        resize: ResizeMode = "resize",
        multiple: int = 1,
    ):
        self.images = to_channels(source, channels) if isinstance(source, Tensor) else None
        self.files = None if isinstance(source, Tensor) else list(source)
        self.channels, self.size, self.resize, self.multiple = channels, size, resize, multiple

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.files)

    def __getitem__(self, index: int) -> Tensor:
        if self.images is not None:
            image = self.images[index]
            image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
        else:
            image, _ = read_image(self.files[index], self.channels)
        if self.size is not None:
            image = fit(image, self.size, self.resize)
        return pad_to_multiple(image, self.multiple)


def image_dataset(
    path: str,
    split: str,
    channels: int,
    size: list[int] = (),  # [height, width]; empty keeps the native size, which must then be uniform
    resize: Literal["resize", "pad", "crop"] = "resize",  # how images reach `size` (see `fit`)
    multiple: int = 4,  # then pad H and W up to a multiple of this (replicating the edge)
) -> ImageDataset:
    """The image dataset of a recipe's `data` section; `path` "" is the shipped Fashion-MNIST subset."""
    if split not in ("train", "test"):
        raise VQTError(f"split must be 'train' or 'test', got {split!r}")
    if channels not in (1, 3):
        raise VQTError(f"data.channels must be 1 (grey) or 3 (RGB) for images, got {channels}")
    if len(size) not in (0, 2) or any(side < 1 for side in size):
        raise VQTError(f"data.size must be [height, width] with positive sides, or empty; got {list(size)}")
    if multiple < 1:
        raise VQTError(f"data.multiple must be at least 1, got {multiple}")
    source = _load_source(Path(path).expanduser() if path else SAMPLE_DIR, split)
    target_size = (int(size[0]), int(size[1])) if size else None
    # Headers are read now when sizes must agree, and when the path is one image file (an unreadable one is
    # reported at once, not as a batch size error); a folder resized to data.size is read lazily.
    one_file = isinstance(source, list) and Path(path).expanduser().is_file()
    if isinstance(source, list) and (target_size is None or one_file):
        _check_headers(source, uniform=target_size is None)
    return ImageDataset(source, channels, target_size, resize, multiple)


def _load_source(path: Path, split: str) -> Tensor | list[Path]:
    """An (N, C, H, W) tensor for IDX and .npz sources, a sorted list of files for the rest."""
    if not path.exists():
        raise VQTError(f"{path}: no such file or directory")
    if path.is_dir():
        if _idx_file(path, "train") or _idx_file(path, "test"):
            file = _idx_file(path, split)
            if file is None:
                raise VQTError(f"{path}: IDX folder has no {IDX_FILES[split]}[.gz] for the {split} split")
            images = read_idx(file)
            if images.ndim != 3:
                raise VQTError(f"{file}: expected IDX images shaped (N, H, W), got {list(images.shape)}")
            return images[:, None]
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise VQTError(f"{path}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return _holdout(files, split)
    if path.suffix.lower() == ".npz":
        images = read_npz(path)
        if len(images) == 0:
            raise VQTError(f"{path}: .npz file holds no images")
        return _holdout(images, split)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return [path]
    raise VQTError(f"{path}: not an image, .npz file or folder of images ({', '.join(IMAGE_EXTENSIONS)})")


def _idx_file(folder: Path, split: str) -> Path | None:
    for name in (IDX_FILES[split], IDX_FILES[split] + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _holdout(items: Tensor | list[Path], split: str) -> Tensor | list[Path]:
    """The last 10% (at least one) as "test", the rest as "train"; a single item serves both."""
    if len(items) == 1:
        return items
    n_test = max(1, len(items) // 10)
    return items[len(items) - n_test :] if split == "test" else items[: len(items) - n_test]


def _check_headers(files: list[Path], uniform: bool) -> None:
    """Every file must be an image (reads headers only); with `uniform` (no data.size) all of the first
    one's size."""
    first_size = image_size(files[0])
    for file in files[1:]:
        size = image_size(file)
        if uniform and size != first_size:
            raise VQTError(
                f"{file}: image is {size[0]}x{size[1]} (HxW) but {files[0].name} is "
                f"{first_size[0]}x{first_size[1]}; set data.size to bring them to one size"
            )
