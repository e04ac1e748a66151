"""The core's own plugin: bottlenecks, losses and the paper's conv encoder/decoder for any rank.

Its modules are imported inside the hooks, so that loading the plugin (as shell completion does) does
not import torch.
"""

from vqtoolkit.hookspecs import hookimpl


@hookimpl
def register_bottlenecks(register):
    from vqtoolkit.nn.gaussian import GaussianBottleneck, IdentityBottleneck
    from vqtoolkit.nn.quantize import ResidualVQ, VectorQuantizer
    from vqtoolkit.nn.scalar import FSQ, LFQ, ResidualFSQ

    register("vq", VectorQuantizer, discrete=True)
    register("rvq", ResidualVQ, discrete=True)
    register("fsq", FSQ, discrete=True)
    register("rfsq", ResidualFSQ, discrete=True)
    register("lfq", LFQ, discrete=True)
    register("gaussian", GaussianBottleneck, discrete=False)
    register("none", IdentityBottleneck, discrete=False)


@hookimpl
def register_encoders(register):
    from vqtoolkit.nn.conv import ConvEncoder

    register("conv", ConvEncoder)


@hookimpl
def register_decoders(register):
    from vqtoolkit.nn.conv import ConvDecoder

    register("conv", ConvDecoder)


@hookimpl
def register_discriminators(register):
    from vqtoolkit.nn.discriminator import PatchDiscriminator

    register("patch", PatchDiscriminator)


@hookimpl
def register_priors(register):
    from vqtoolkit.nn.pixelcnn import PixelCNN

    register("pixelcnn", PixelCNN)


@hookimpl
def register_losses(register):
    from vqtoolkit import losses

    register("mse", losses.MSELoss)
    register("l1", losses.L1Loss)
    register("l2", losses.HalfL2SumLoss)
    register("bce", losses.BCESumLoss)


@hookimpl
def register_metrics(register):
    from vqtoolkit import losses

    register("mse", losses.mse_metric, higher_is_better=False)
