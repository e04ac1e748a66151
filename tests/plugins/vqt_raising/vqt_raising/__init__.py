"""A plugin that imports fine but whose hooks raise part way: the toolkit must leave it out, say so by name,
and keep every command working."""

from vqtoolkit.hookspecs import hookimpl


@hookimpl
def register_encoders(register):
    register("half_registered", lambda in_channels, latent_dim: None)
    raise RuntimeError("the plugin's own bug")


@hookimpl
def register_commands(cli):
    raise RuntimeError("cannot add a command")
