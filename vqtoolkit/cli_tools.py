"""`vqt report`, `vqt info`, `vqt export` and `vqt completion`: commands around trained runs.

A built-in plugin of its own (the toolkit's `vqtoolkit.commands` entry point): it adds these commands
through `register_commands`, as any plugin would. Each command imports what it needs when it runs, so
`vqt --help` and shell completion stay fast.
"""

from __future__ import annotations

import json

import click

from vqtoolkit.errors import VQTError
from vqtoolkit.hookspecs import hookimpl

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("run_dir")
@click.option("-o", "--output", "out_dir", metavar="FOLDER", help="Default: RUN_DIR/report.")
@click.option("--batches", default=0, show_default=True, help="Held-out batches for code usage (0 = all).")
@click.option("--samples", default=16, show_default=True, help="Prior runs: how many samples to draw.")
@click.option("--seed", default=0, show_default=True, help="Prior runs: the seed of the samples.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu or cuda.")
def report(run_dir, out_dir, batches, samples, seed, device):
    """Write pictures of a run and a report.md that shows them (needs matplotlib).

    For a VQ-VAE/VAE run: held-out originals next to their reconstructions (an image grid, speech
    waveforms and log-mel spectrograms, or video frame strips), a codebook usage histogram and training
    curves. For a prior run: training curves and samples decoded through its tokenizer.

    \b
    Examples:
      vqt report runs/image_vqvae                      # writes runs/image_vqvae/report/report.md
      vqt report runs/speech_vqvae -o docs/img/speech
      vqt report runs/image_prior --samples 16
    """
    from vqtoolkit.report import write_report
    from vqtoolkit.rundir import resolve_device

    if samples < 1:
        raise VQTError("--samples must be at least 1")
    path = write_report(
        run_dir, out_dir, str(resolve_device(device, "--device")), batches=batches, samples=samples, seed=seed
    )
    click.echo(f"wrote {path}", err=True)


@click.command()
@click.argument("path")
@click.option(
    "--model",
    "run_dir",
    metavar="RUN_DIR",
    help="Codes files: check that this run made them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(path, run_dir, as_json):
    """Describe a run directory, a codes file or a code dataset.

    A run: its modality, model kind, bottleneck, codebook sizes, downsampling, parameters, steps trained,
    final held-out metrics and files. A codes file: its modality, code grid, codebook sizes, the original
    size, duration or frame rate, and the hash of the model that made it; with --model, whether that run
    is the one (decoding with another model is refused). Exits 1 when --model does not match. A code
    dataset (vqt tokenize --dataset): its model, items, codes, hours of media and skipped files.

    \b
    Examples:
      vqt info runs/image_vqvae
      vqt info talk.codes --model runs/speech_vqvae
      vqt info runs/image_prior --json
      vqt info runs/speech_codes
    """
    from vqtoolkit.info import format_info
    from vqtoolkit.info import info as describe

    described = describe(path, run_dir)
    click.echo(json.dumps(described, indent=2) if as_json else format_info(described))
    if described.get("model_matches") is False:
        raise SystemExit(1)


@click.command("export")
@click.argument("run_dir")
@click.option("-o", "--output", "out_dir", metavar="FOLDER", help="Default: RUN_DIR/export.")
@click.option("--static", is_flag=True, help="Fix the batch and grid sizes at the recipe's example size.")
def export_command(run_dir, out_dir, static):
    """Write the encoder (media -> codes) and decoder (codes -> media) as torch.export programs.

    Writes encoder.pt2 and decoder.pt2 (TorchScript .ts files where torch.export cannot capture the
    model) and export.json, which says how each was made and what it takes. Batch and grid axes are
    dynamic where the model allows (grid sizes a multiple of the downsampling), else fixed at the recipe's
    example size. The toolkit never loads these files: loading them can run pickle, so load only exports
    you trust (torch.export.load, torch.jit.load).

    \b
    Example:
      vqt export runs/image_vqvae -o deploy/image
    """
    from vqtoolkit.export import export_run

    described = export_run(run_dir, out_dir, dynamic=not static)
    for name in ("encoder", "decoder"):
        part = described[name]
        shape = "dynamic batch and grid axes" if part["dynamic"] else f"fixed shape {part['example_shape']}"
        click.echo(f"{name}: {part['path']} ({part['method']}, {shape})")
        for note in part["notes"]:
            click.echo(f"  note: {note}")
    click.echo(f"wrote {out_dir or f'{run_dir}/export'}", err=True)


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell):
    """Print the shell completion script for vqt.

    \b
    Examples:
      vqt completion bash > ~/.local/share/bash-completion/completions/vqt
      vqt completion zsh > "${fpath[1]}/_vqt"
      vqt completion fish > ~/.config/fish/completions/vqt.fish
      eval "$(vqt completion bash)"                    # this shell only
    """
    from click.shell_completion import get_completion_class

    group = click.get_current_context().find_root().command  # the `vqt` group this command was added to
    complete = get_completion_class(shell)(group, {}, "vqt", "_VQT_COMPLETE")
    click.echo(complete.source())


@hookimpl
def register_commands(cli):
    for command in (report, info, export_command, completion):
        cli.add_command(command)
