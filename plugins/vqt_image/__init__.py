"""The image modality plugin: PNG/JPEG/BMP/WebP I/O, image datasets, the VQ-VAE paper's 2D
encoder/decoder ("vqvae2d") and the PSNR/SSIM metrics, registered through the ordinary hooks."""

from __future__ import annotations

from typing import Annotated

from vqt_image.dataset import image_dataset
from vqt_image.io import IMAGE_EXTENSIONS, read_image, write_image
from vqt_image.metrics import psnr, ssim
from vqtoolkit.errors import VQTError
from vqtoolkit.hookspecs import hookimpl
from vqtoolkit.modality import Modality, check_numbers
from vqtoolkit.nn.conv import ConvDecoder, ConvEncoder
from vqtoolkit.pictures import save_grid, save_reconstructions
from vqtoolkit.ranges import COUNT, WIDTH, Range


def _check_2d(downsample: list[int]) -> None:
    if len(downsample) != 2:
        raise VQTError(f"vqvae2d needs downsample [height factor, width factor], got {list(downsample)}")


class VQVAE2DEncoder(ConvEncoder):
    """The VQ-VAE paper's image encoder: two stride-2 4x4 convs (x4 per axis), 3x3 conv, 2 residual blocks."""

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        downsample: list[Annotated[int, Range(1, 1024)]] = (4, 4),  # factor per axis (H, W), powers of two
        hidden: Annotated[int, WIDTH] = 256,  # channels of the hidden layers (256 in the paper)
        res_blocks: Annotated[int, COUNT] = 2,  # residual blocks after the strided convolutions
        res_hidden: Annotated[
            int, Range(0, 2**20)
        ] = 0,  # hidden channels in residual blocks; 0 = same as `hidden`
    ):
        _check_2d(downsample)
        super().__init__(in_channels, latent_dim, downsample, hidden, res_blocks, res_hidden)


class VQVAE2DDecoder(ConvDecoder):
    """The VQ-VAE paper's image decoder: 3x3 conv, 2 residual blocks, two stride-2 4x4 transposed convs."""

    def __init__(
        self,
        out_channels: int,
        latent_dim: int,
        downsample: list[Annotated[int, Range(1, 1024)]] = (4, 4),  # must match the encoder's
        hidden: Annotated[int, WIDTH] = 256,
        res_blocks: Annotated[int, COUNT] = 2,  # residual blocks after the strided convolutions
        res_hidden: Annotated[int, Range(0, 2**20)] = 0,
    ):
        _check_2d(downsample)
        super().__init__(out_channels, latent_dim, downsample, hidden, res_blocks, res_hidden)


def _report_picture(originals, reconstructions, path, options: dict):
    from vqtoolkit.report import image_grid

    return image_grid(originals, reconstructions, path)


@hookimpl
def register_modalities(register):
    register(
        "image",
        Modality(
            name="image",
            rank=2,
            extensions=IMAGE_EXTENSIONS,
            dataset=image_dataset,
            encoder="vqvae2d",
            decoder="vqvae2d",
            loss="mse",
            metrics=("psnr", "ssim"),
            read=read_image,
            write=write_image,
            picture=save_reconstructions,
            report_picture=_report_picture,
            overview=save_grid,
            suffix=".png",
            example_grid=lambda options: [int(s) for s in options.get("size", [32, 32])],
            check_media=lambda media: check_numbers(
                media, {"height": (int, 1, 2**16), "width": (int, 1, 2**16)}
            ),
        ),
    )


@hookimpl
def register_encoders(register):
    register("vqvae2d", VQVAE2DEncoder)


@hookimpl
def register_decoders(register):
    register("vqvae2d", VQVAE2DDecoder)


@hookimpl
def register_metrics(register):
    register("psnr", psnr, higher_is_better=True)
    register("ssim", ssim, higher_is_better=True)
