"""A PatchGAN discriminator (pix2pix, VQGAN) for images and video: strided convolutions whose every output
judges one patch of the input as real or generated."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from vqtoolkit.nn.conv import CONV

SLOPE = 0.2


class PatchDiscriminator(nn.Module):
    """`layers` stride-2 convolutions (kernel 4) doubling the channels, then a 1-channel map of verdicts.

    The rank comes from the media: 2 for images (B, C, H, W), 3 for video (B, C, T, H, W). With
    `spectral_norm` every convolution is spectrally normalised, which keeps a small batch from
    overpowering the generator.
    """

    def __init__(
        self,
        in_channels: int,
        rank: int,
        channels: int = 64,  # of the first convolution, doubled per layer
        max_channels: int = 512,
        layers: int = 3,  # stride-2 convolutions: each output sees a patch of about 2**layers * 4 steps
        spectral_norm: bool = True,
    ):
        super().__init__()
        if rank not in CONV:
            raise ValueError(f"the patch discriminator handles media of rank 1 to 3, got rank {rank}")
        conv, norm = CONV[rank], (_spectral if spectral_norm else (lambda m: m))
        widths = [in_channels, *(min(channels * 2**i, max_channels) for i in range(layers))]
        self.convs = nn.ModuleList(
            norm(conv(cin, cout, 4, stride=2, padding=1)) for cin, cout in zip(widths[:-1], widths[1:])
        )
        self.out = norm(conv(widths[-1], 1, 3, padding=1))

    def forward(self, media: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        x, features = media, []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), SLOPE)
            features.append(x)
        return [(self.out(x), features)]


def _spectral(module: nn.Module) -> nn.Module:
    return spectral_norm(module)
