"""The core's own plugin: bottlenecks, losses and the paper's conv encoder/decoder for any rank."""

from vqtoolkit import losses
from vqtoolkit.hookspecs import hookimpl
from vqtoolkit.nn.conv import ConvDecoder, ConvEncoder
from vqtoolkit.nn.discriminator import PatchDiscriminator
from vqtoolkit.nn.gaussian import GaussianBottleneck, IdentityBottleneck
from vqtoolkit.nn.pixelcnn import PixelCNN
from vqtoolkit.nn.quantize import ResidualVQ, VectorQuantizer
from vqtoolkit.nn.scalar import FSQ, LFQ, ResidualFSQ


@hookimpl
def register_bottlenecks(register):
    register("vq", VectorQuantizer, discrete=True)
    register("rvq", ResidualVQ, discrete=True)
    register("fsq", FSQ, discrete=True)
    register("rfsq", ResidualFSQ, discrete=True)
    register("lfq", LFQ, discrete=True)
    register("gaussian", GaussianBottleneck, discrete=False)
    register("none", IdentityBottleneck, discrete=False)


@hookimpl
def register_encoders(register):
    register("conv", ConvEncoder)


@hookimpl
def register_decoders(register):
    register("conv", ConvDecoder)


@hookimpl
def register_discriminators(register):
    register("patch", PatchDiscriminator)


@hookimpl
def register_priors(register):
    register("pixelcnn", PixelCNN)


@hookimpl
def register_losses(register):
    register("mse", losses.MSELoss)
    register("l1", losses.L1Loss)
    register("l2", losses.HalfL2SumLoss)
    register("bce", losses.BCESumLoss)


@hookimpl
def register_metrics(register):
    register("mse", losses.mse_metric, higher_is_better=False)
