"""The plugin hooks of vqtoolkit. Hook signatures are public API: arguments are only ever added.

Every `register_<kind>` hook receives a `register(name, factory, **meta)` callback, so one plugin
can register many components. Names are global per kind; two plugins registering the same name
is an error that names both.
"""

import pluggy

hookspec = pluggy.HookspecMarker("vqtoolkit")
hookimpl = pluggy.HookimplMarker("vqtoolkit")


@hookspec
def register_modalities(register):
    """Register media modalities (speech, image, video, ...).

    `register(name, modality)` where `modality` is a `vqtoolkit.modality.Modality`: its latent rank,
    the file extensions it reads, a reader, a writer, a dataset factory and the names of its default
    encoder, decoder, loss and metrics.
    """


@hookspec
def register_encoders(register):
    """Register encoders: `register(name, factory)`.

    `factory(in_channels: int, latent_dim: int, **options) -> nn.Module` maps media
    (B, in_channels, *grid) to latents (B, latent_dim, *latent_grid). Options are recipe keys under
    `model.encoder`; annotate them so recipes are type-checked. Set `downsample` (a tuple, one factor
    per axis) on the module so the toolkit can pad inputs to a multiple of it.
    """


@hookspec
def register_decoders(register):
    """Register decoders: `register(name, factory)`.

    `factory(out_channels: int, latent_dim: int, **options) -> nn.Module` maps latents back to media.
    Options are recipe keys under `model.decoder`.
    """


@hookspec
def register_bottlenecks(register):
    """Register bottlenecks (vq, rvq, gaussian, none, ...): `register(name, factory)`.

    `factory(dim: int, **options) -> vqtoolkit.nn.base.Bottleneck`. Options are recipe keys under
    `bottleneck`.
    """


@hookspec
def register_priors(register):
    """Register priors over code grids (PixelCNN variants): `register(name, factory)`.

    `factory(codebook_size: int, rank: int, **options) -> nn.Module`. Options are recipe keys under
    `prior`.
    """


@hookspec
def register_losses(register):
    """Register reconstruction losses: `register(name, factory)`.

    `factory(**options)` returns an object with `per_example(raw_output, target) -> (B,)` tensor,
    `to_media(raw_output) -> tensor` (e.g. sigmoid for a BCE head) and a bool `is_nll`, true when
    the loss is a negative log-likelihood usable in an ELBO. Options are keys under `model.loss`.
    """


@hookspec
def register_metrics(register):
    """Register evaluation metrics: `register(name, fn, higher_is_better=True)`.

    `fn(reconstruction, target) -> (B,)` tensor of per-example values, media in [0, 1] (images,
    video) or [-1, 1] (audio).
    """


@hookspec
def register_discriminators(register):
    """Register discriminators for adversarial training: `register(name, factory)`.

    `factory(in_channels: int, rank: int, **options) -> nn.Module` maps media (B, C, *grid) of the given
    channels and grid rank to a list of `(logits, feature_maps)`
    pairs, one per sub-discriminator (`logits` any shape, `feature_maps` a list of tensors for feature
    matching). Options are recipe keys of an entry of `adversarial.discriminators`.
    """


@hookspec
def register_commands(cli):
    """Add subcommands to the `vqt` click group: decorate functions with `@cli.command()`."""
