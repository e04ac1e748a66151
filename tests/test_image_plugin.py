"""The image plugin: file I/O on real files, the shipped Fashion-MNIST subset, datasets, PSNR/SSIM, hooks."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pluggy
import pytest
import torch
import vqt_image
from PIL import Image, features
from vqt_image.dataset import SAMPLE_DIR, image_dataset
from vqt_image.io import read_idx, read_image, read_npz, write_image
from vqt_image.metrics import psnr, ssim, window_1d

from vqtoolkit import hookspecs
from vqtoolkit.config import check_options, option_types
from vqtoolkit.errors import VQTError

# ---------------------------------------------------------------- helpers


def random_pixels(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    array = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return array[:, :, 0] if channels == 1 else array


def smooth_pixels(height: int, width: int, channels: int) -> np.ndarray:
    """A gentle gradient: what JPEG compresses almost losslessly."""
    rows, cols = np.mgrid[0:height, 0:width]
    planes = [(rows * 4 + cols * 3 + 40 * c) % 200 + 20 for c in range(channels)]
    array = np.stack(planes, axis=-1).astype(np.uint8)
    return array[:, :, 0] if channels == 1 else array


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) uint8 -> (C, H, W) float in [0, 1], the reader's convention."""
    tensor = torch.from_numpy(np.array(array)).float() / 255
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, 0x08, array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


# ---------------------------------------------------------------- reading and writing image files

LOSSLESS = [("png", {}), ("bmp", {}), ("webp", {"lossless": True})]


@pytest.mark.parametrize("suffix, options", LOSSLESS)
@pytest.mark.parametrize("channels, height, width", [(1, 13, 7), (3, 9, 22)])
def test_lossless_formats_read_back_exactly(tmp_path, suffix, options, channels, height, width):
    if suffix == "webp" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    pixels = random_pixels(height, width, channels)
    path = tmp_path / f"odd.{suffix}"
    Image.fromarray(pixels).save(path, **options)
    image, meta = read_image(path, channels)
    assert image.dtype == torch.float32 and image.shape == (channels, height, width)
    assert meta == {"height": height, "width": width}
    assert torch.equal(image, as_tensor(pixels))


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_reads_back_within_tolerance(tmp_path, channels):
    pixels = smooth_pixels(21, 15, channels)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    image, meta = read_image(path, channels)
    assert image.shape == (channels, 21, 15) and meta == {"height": 21, "width": 15}
    assert (image - as_tensor(pixels)).abs().mean() < 0.02


def test_read_image_converts_channels(tmp_path):
    rgb = random_pixels(6, 5, 3)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    grey, _ = read_image(tmp_path / "rgb.png", channels=1)
    assert torch.equal(grey, as_tensor(np.asarray(Image.fromarray(rgb).convert("L"))))
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "grey.png")
    three, _ = read_image(tmp_path / "grey.png", channels=3)
    assert three.shape == (3, 6, 5) and torch.equal(three[0], three[2])
    assert torch.equal(three[1], as_tensor(rgb[:, :, 0])[0])


def test_read_image_keeps_16_bit_grey(tmp_path):
    values = np.array([[0, 1, 257], [32768, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    image, _ = read_image(tmp_path / "deep.png")
    assert torch.allclose(image[0], torch.from_numpy(values.astype(np.float32) / 65535))


@pytest.mark.parametrize("channels", [1, 3])
def test_write_image_round_trip_is_exact(tmp_path, channels):
    original = as_tensor(random_pixels(11, 19, channels, seed=3))
    write_image(tmp_path / "sub" / "out.png", original)
    back, meta = read_image(tmp_path / "sub" / "out.png", channels)
    assert torch.equal(back, original) and meta == {"height": 11, "width": 19}


def test_write_image_clamps_rounds_and_picks_format(tmp_path):
    image = torch.tensor([[[-0.5, 1.5, 0.502, 0.2]]])
    write_image(tmp_path / "clamp.png", image)
    assert np.asarray(Image.open(tmp_path / "clamp.png")).tolist() == [[0, 255, 128, 51]]
    write_image(tmp_path / "photo.jpg", torch.rand(3, 8, 8))
    write_image(tmp_path / "no_suffix", torch.rand(1, 8, 8))
    assert Image.open(tmp_path / "photo.jpg").format == "JPEG"
    assert Image.open(tmp_path / "no_suffix").format == "PNG"


def test_write_image_crops_to_meta_size(tmp_path):
    padded = torch.rand(1, 32, 32)
    write_image(tmp_path / "crop.png", padded, {"height": 28, "width": 30})
    back, meta = read_image(tmp_path / "crop.png")
    assert meta == {"height": 28, "width": 30}
    assert torch.allclose(back, padded[:, :28, :30], atol=0.5 / 255)


def test_bad_image_files_raise_one_line_errors_naming_the_file(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(random_pixels(40, 40, 3)).save(good)
    cases = {
        "missing.png": None,
        "random.png": np.random.default_rng(0).bytes(300),
        "empty.png": b"",
        "truncated.png": good.read_bytes()[: good.stat().st_size // 2],
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(VQTError) as info:
            read_image(tmp_path / name)
        message = str(info.value)
        assert name in message and "\n" not in message
    with pytest.raises(VQTError, match="cannot identify image file"):
        read_image(tmp_path / "random.png")
    with pytest.raises(VQTError, match="truncated"):
        read_image(tmp_path / "truncated.png")
    with pytest.raises(VQTError, match="channels"):
        read_image(good, channels=2)


# ---------------------------------------------------------------- IDX, npz and the shipped subset


def test_shipped_fashion_mnist_subset():
    counts = {"train": 4000, "t10k": 1000}
    for split, count in counts.items():
        images = read_idx(SAMPLE_DIR / f"{split}-images-idx3-ubyte.gz")
        labels = read_idx(SAMPLE_DIR / f"{split}-labels-idx1-ubyte.gz")
        assert images.dtype == torch.uint8 and images.shape == (count, 28, 28)
        assert labels.shape == (count,) and set(labels.tolist()) == set(range(10))
        assert images.float().mean() > 40  # real pictures, not blank
    assert sum(p.stat().st_size for p in SAMPLE_DIR.iterdir()) < 3_000_000
    train, test = image_dataset("", "train", 1), image_dataset("", "test", 1)
    assert (len(train), len(test)) == (4000, 1000)
    first = train[0]
    assert first.dtype == torch.float32 and first.shape == (1, 28, 28)
    assert first.min() >= 0 and first.max() <= 1 and first.max() > 0.5
    assert torch.equal(first, read_idx(SAMPLE_DIR / "train-images-idx3-ubyte.gz")[0][None].float() / 255)


def test_read_idx_plain_and_bad_files(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "plain-idx3-ubyte", array, compress=False)
    assert torch.equal(read_idx(tmp_path / "plain-idx3-ubyte"), torch.from_numpy(array))
    header = struct.pack(">BBBBIII", 0, 0, 0x08, 3, 2, 3, 4)
    bad = {
        "magic.gz": gzip.compress(b"\x12\x34" + header[2:] + array.tobytes()),
        "short.gz": gzip.compress(header + array.tobytes()[:-5]),
        "float.gz": gzip.compress(header[:2] + b"\x0d" + header[3:] + array.tobytes()),
        "broken.gz": gzip.compress(header + array.tobytes())[:20],
    }
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(VQTError, match=name):
            read_idx(tmp_path / name)
    with pytest.raises(VQTError, match="missing-idx"):
        read_idx(tmp_path / "missing-idx")


def test_idx_folder_uses_train_and_t10k_files(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.full((5, 6, 6), 255, np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 6, 6), np.uint8), compress=False)
    train = image_dataset(str(tmp_path), "train", 3, multiple=4)
    test = image_dataset(str(tmp_path), "test", 1)
    assert (len(train), len(test)) == (5, 3)
    assert train[0].shape == (3, 8, 8) and torch.all(train[0] == 1)
    assert test[2].shape == (1, 8, 8) and torch.all(test[2] == 0)


def test_npz_sources_and_holdout(tmp_path):
    rng = np.random.default_rng(1)
    layouts = {
        "nhw.npz": rng.integers(0, 256, (20, 12, 12), dtype=np.uint8),
        "nhwc.npz": rng.integers(0, 256, (20, 12, 12, 3), dtype=np.uint8),
        "nchw.npz": rng.random((20, 3, 12, 12)).astype(np.float64),
    }
    for name, array in layouts.items():
        np.savez(tmp_path / name, array)
        assert read_npz(tmp_path / name).shape == (20, 1 if array.ndim == 3 else 3, 12, 12)
    train = image_dataset(str(tmp_path / "nhwc.npz"), "train", 3, multiple=1)
    test = image_dataset(str(tmp_path / "nhwc.npz"), "test", 3, multiple=1)
    assert (len(train), len(test)) == (18, 2)  # the last 10% is the test split
    assert torch.equal(test[1], torch.from_numpy(layouts["nhwc.npz"][19]).permute(2, 0, 1).float() / 255)
    grey = image_dataset(str(tmp_path / "nchw.npz"), "train", 1, size=[16, 16])
    assert grey[0].shape == (1, 16, 16) and grey[0].dtype == torch.float32
    np.savez(tmp_path / "loud.npz", images=np.full((4, 5, 5), 2.0))
    with pytest.raises(VQTError, match=r"loud\.npz.*\[0, 1\]"):
        read_npz(tmp_path / "loud.npz")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 4, 4)), b=np.zeros((2, 4, 4)))
    with pytest.raises(VQTError, match="two.npz"):
        read_npz(tmp_path / "two.npz")


# ---------------------------------------------------------------- image folders


def make_folder(root, sizes: list[tuple[int, int]]) -> list:
    """Images of the given (H, W), half of them in a subfolder, RGB PNGs and grey JPEG/BMP."""
    paths = []
    for i, (height, width) in enumerate(sizes):
        folder = root / ("nested" if i % 2 else "")
        folder.mkdir(exist_ok=True)
        suffix = ("png", "jpg", "bmp")[i % 3]
        path = folder / f"img{i:02d}.{suffix}"
        Image.fromarray(random_pixels(height, width, 3 if suffix == "png" else 1, seed=i)).save(path)
        paths.append(path)
    return paths


def test_folder_with_mixed_sizes_resizes_to_size(tmp_path):
    sizes = [(20 + i, 30 - i) for i in range(20)]
    make_folder(tmp_path, sizes)
    (tmp_path / "notes.txt").write_text("not an image")
    train = image_dataset(str(tmp_path), "train", 3, size=[32, 32])
    test = image_dataset(str(tmp_path), "test", 3, size=[32, 32])
    assert (len(train), len(test)) == (18, 2)
    for item in (train[0], train[17], test[1]):
        assert item.shape == (3, 32, 32) and item.dtype == torch.float32
        assert 0 <= item.min() and item.max() <= 1
    with pytest.raises(VQTError) as info:
        image_dataset(str(tmp_path), "train", 3)
    assert "img02.bmp: image is 22x28" in str(info.value) and "data.size" in str(info.value)


def test_pad_and_crop_modes(tmp_path):
    small, large = random_pixels(20, 10, 1, seed=5), random_pixels(40, 40, 1, seed=6)
    Image.fromarray(small).save(tmp_path / "small.png")
    Image.fromarray(large).save(tmp_path / "large.png")
    padded = image_dataset(str(tmp_path / "small.png"), "train", 1, size=[32, 32], resize="pad")[0]
    assert padded.shape == (1, 32, 32)
    assert torch.equal(padded[:, 6:26, 11:21], as_tensor(small))
    assert padded.sum() == as_tensor(small).sum()  # zeros around it
    cropped = image_dataset(str(tmp_path / "large.png"), "train", 1, size=[32, 32], resize="crop")[0]
    assert torch.equal(cropped, as_tensor(large)[:, 4:36, 4:36])
    shrunk = image_dataset(str(tmp_path / "large.png"), "train", 1, size=[16, 32], resize="pad")[0]
    assert shrunk.shape == (1, 16, 32) and torch.all(shrunk[:, :, :8] == 0) and shrunk[:, :, 8:24].sum() > 0


def test_pad_to_multiple_replicates_edges(tmp_path):
    pixels = random_pixels(30, 30, 1, seed=7)
    Image.fromarray(pixels).save(tmp_path / "thirty.png")
    image = image_dataset(str(tmp_path / "thirty.png"), "test", 1, multiple=4)[0]
    assert image.shape == (1, 32, 32)
    assert torch.equal(image[:, :30, :30], as_tensor(pixels))
    assert torch.equal(image[:, 31, :30], image[:, 29, :30]) and torch.equal(image[:, :, 31], image[:, :, 29])
    assert image_dataset(str(tmp_path / "thirty.png"), "train", 1, multiple=1)[0].shape == (1, 30, 30)


def test_dataset_bad_inputs(tmp_path):
    with pytest.raises(VQTError, match="nowhere"):
        image_dataset(str(tmp_path / "nowhere"), "train", 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VQTError, match="holds no images"):
        image_dataset(str(tmp_path / "empty"), "train", 1)
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(VQTError, match="table.csv"):
        image_dataset(str(tmp_path / "table.csv"), "train", 1)
    with pytest.raises(VQTError, match="split"):
        image_dataset("", "valid", 1)
    with pytest.raises(VQTError, match="data.size"):
        image_dataset("", "train", 1, size=[32])
    folder = tmp_path / "photos"
    folder.mkdir()
    make_folder(folder, [(16, 16)] * 3)
    (folder / "zz_broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(VQTError, match="zz_broken.png"):  # found while checking the native sizes
        image_dataset(str(folder), "test", 1)
    lazily = image_dataset(str(folder), "test", 1, size=[16, 16])
    with pytest.raises(VQTError, match="zz_broken.png: not a readable image"):  # or when the item is read
        lazily[0]


def test_dataset_options_are_typed_for_recipes():
    options, open_ended = option_types(image_dataset)
    assert set(options) == {"size", "resize", "multiple"} and not open_ended
    check_options(image_dataset, {"size": [64, 64], "resize": "crop", "multiple": 8}, "data")
    with pytest.raises(VQTError, match="data.resize"):
        check_options(image_dataset, {"resize": "stretch"}, "data")


# ---------------------------------------------------------------- metrics


def test_psnr_hand_values_and_video():
    target = torch.zeros(2, 1, 8, 8)
    recon = torch.full_like(target, 0.1)  # mse 0.01 -> 10 log10(1 / 0.01) = 20 dB
    recon[1] = 0.5  # mse 0.25 -> 10 log10(4) dB
    assert torch.allclose(psnr(recon, target), torch.tensor([20.0, 10 * math.log10(4)]), atol=1e-4)
    assert torch.equal(psnr(target, target), torch.tensor([100.0, 100.0]))
    video_target = torch.rand(2, 3, 4, 8, 8)
    video = (video_target + 0.05 * torch.randn_like(video_target)).clamp(0, 1)
    per_frame = torch.stack([psnr(video[:, :, t], video_target[:, :, t]) for t in range(4)], dim=1)
    assert torch.allclose(psnr(video, video_target), per_frame.mean(1))


def test_ssim_identical_and_noise():
    torch.manual_seed(0)
    image = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim(image, image), torch.ones(2), atol=1e-6)
    scores = [
        ssim((image + level * torch.randn_like(image)).clamp(0, 1), image).mean()
        for level in (0.02, 0.1, 0.3)
    ]
    assert 1 > scores[0] > scores[1] > scores[2] > 0
    assert torch.allclose(ssim(image, 1 - image), ssim(1 - image, image))  # symmetric


def test_ssim_hand_computed_uniform_window():
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    y = x * 0.5
    # one 2x2 uniform window: mu_x 0.5, mu_y 0.25, var_x 0.25, var_y 0.0625, cov 0.25 - 0.125 = 0.125
    c1, c2 = 0.01**2, 0.03**2
    expected = (2 * 0.5 * 0.25 + c1) * (2 * 0.125 + c2) / ((0.5**2 + 0.25**2 + c1) * (0.25 + 0.0625 + c2))
    assert ssim(y, x, window_size=2, sigma=None).item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.64052, abs=1e-5)


def test_ssim_gaussian_window_and_small_images():
    window = window_1d(11, 1.5)
    assert window.sum().item() == pytest.approx(1.0) and torch.equal(window, window.flip(0))
    assert (window[5] / window[6]).item() == pytest.approx(math.exp(1 / (2 * 1.5**2)), rel=1e-5)
    torch.manual_seed(1)
    x, y = torch.rand(1, 1, 11, 11), torch.rand(1, 1, 11, 11)
    # 11x11 images: a single window position, so SSIM is the Gaussian-weighted statistics themselves
    w = (window[:, None] * window[None, :]).double()
    xd, yd = x[0, 0].double(), y[0, 0].double()
    mu_x, mu_y = (w * xd).sum(), (w * yd).sum()
    var_x, var_y = (w * xd**2).sum() - mu_x**2, (w * yd**2).sum() - mu_y**2
    cov = (w * xd * yd).sum() - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    expected = (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    assert ssim(x, y).item() == pytest.approx(expected.item(), rel=1e-4)
    small_x, small_y = torch.rand(2, 1, 8, 6), torch.rand(2, 1, 8, 6)
    small = ssim(small_x, small_y)  # smaller than the window: an 8x6 window, one position
    assert small.shape == (2,) and torch.allclose(small, ssim(small_x, small_y, window_size=8))
    assert not torch.allclose(small, ssim(small_x, small_y, window_size=5))
    video = torch.rand(1, 1, 3, 16, 16)
    per_frame = torch.stack([ssim(video[:, :, t], video[:, :, t].flip(-1)) for t in range(3)], dim=1)
    assert torch.allclose(ssim(video, video.flip(-1)), per_frame.mean(1))


# ---------------------------------------------------------------- hooks


def collect(hook_name: str) -> dict:
    manager = pluggy.PluginManager("vqtoolkit")
    manager.add_hookspecs(hookspecs)
    manager.register(vqt_image, name="vqt_image")
    found = {}
    getattr(manager.hook, hook_name)(
        register=lambda name, factory, **meta: found.update({name: (factory, meta)})
    )
    return found


def test_hooks_register_modality_models_and_metrics():
    modality = collect("register_modalities")["image"][0]
    assert modality.rank == 2 and ".webp" in modality.extensions and modality.metrics == ("psnr", "ssim")
    assert modality.dataset is image_dataset and modality.read is read_image and modality.write is write_image
    assert (modality.encoder, modality.decoder, modality.loss) == ("vqvae2d", "vqvae2d", "mse")
    metrics = collect("register_metrics")
    assert metrics["psnr"] == (psnr, {"higher_is_better": True})
    assert metrics["ssim"] == (ssim, {"higher_is_better": True})
    encoder_cls = collect("register_encoders")["vqvae2d"][0]
    decoder_cls = collect("register_decoders")["vqvae2d"][0]
    encoder, decoder = encoder_cls(1, 8, hidden=16, res_blocks=1), decoder_cls(1, 8, hidden=16, res_blocks=1)
    assert encoder.downsample == (4, 4)
    latents = encoder(torch.rand(2, 1, 28, 32))
    assert latents.shape == (2, 8, 7, 8) and decoder(latents).shape == (2, 1, 28, 32)
    assert set(option_types(encoder_cls)[0]) == {"downsample", "hidden", "res_blocks", "res_hidden"}
    with pytest.raises(VQTError, match="vqvae2d"):
        encoder_cls(1, 8, downsample=[4, 4, 4])
