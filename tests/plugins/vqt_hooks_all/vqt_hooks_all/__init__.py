"""Implements every vqtoolkit hook once, so the tests can see each hook reach the toolkit."""

import click
import torch

from vqtoolkit.hookspecs import hookimpl
from vqtoolkit.losses import MSELoss
from vqtoolkit.modality import Modality
from vqtoolkit.nn.base import Bottleneck, BottleneckOutput
from vqtoolkit.nn.conv import ConvDecoder, ConvEncoder


class Sign(Bottleneck):
    """Binarises latents with a straight-through sign."""

    def __init__(self, dim: int, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, z):
        return BottleneckOutput(z + (torch.sign(z) * self.scale - z).detach(), z.new_zeros(()))


class RandomSignals(torch.utils.data.Dataset):
    def __init__(self, path: str, split: str, channels: int, length: int = 64, count: int = 32):
        generator = torch.Generator().manual_seed(0 if split == "train" else 1)
        self.items = torch.rand(count, channels, length, generator=generator) * 2 - 1

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


@hookimpl
def register_modalities(register):
    register(
        "signal",
        Modality(
            "signal",
            1,
            (".sig",),
            RandomSignals,
            "conv1d",
            "conv1d",
            "abs",
            ("peak",),
            value_range=(-1.0, 1.0),
        ),
    )


@hookimpl
def register_encoders(register):
    register(
        "conv1d", lambda in_channels, latent_dim, hidden=16: ConvEncoder(in_channels, latent_dim, [4], hidden)
    )


@hookimpl
def register_decoders(register):
    register(
        "conv1d",
        lambda out_channels, latent_dim, hidden=16: ConvDecoder(out_channels, latent_dim, [4], hidden),
    )


@hookimpl
def register_bottlenecks(register):
    register("sign", Sign)


@hookimpl
def register_priors(register):
    register("uniform_prior", lambda codebook_size, rank, temperature=1.0: torch.nn.Identity())


@hookimpl
def register_losses(register):
    class AbsLoss(MSELoss):
        def per_example(self, output, target):
            return (output - target).abs().flatten(1).sum(1)

    register("abs", AbsLoss)


@hookimpl
def register_metrics(register):
    register("peak", lambda recon, target: (recon - target).abs().flatten(1).amax(1), higher_is_better=False)


@hookimpl
def register_commands(cli):
    @cli.command()
    @click.argument("name")
    def hello(name):
        """Say hello (added by the vqt_hooks_all test plugin)."""
        click.echo(f"hello {name} from a plugin command")
