"""Registers a bottleneck named 'vq', which the core already registers: the toolkit must refuse."""

from vqtoolkit.hookspecs import hookimpl
from vqtoolkit.nn.gaussian import IdentityBottleneck


@hookimpl
def register_bottlenecks(register):
    register("vq", IdentityBottleneck)
