"""The `vqt` command line: thin click commands over library functions."""

from __future__ import annotations

import json
import os
import sys

import click

from vqtoolkit.errors import VQTError, one_line
from vqtoolkit.memory import fix_mmap_threshold, keep_freed_memory


class Group(click.Group):
    """Turns user mistakes (VQTError, missing files) into one line and exit code 1, unless --debug; any
    other exception is a bug, also one line, that says so."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - every exception that escapes a command ends here
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {one_line(error_message(exc))}", err=True)
            sys.exit(1)


def error_message(exc: BaseException) -> str:
    if isinstance(exc, VQTError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory (a smaller batch, chunk or input would fit)"
    first = (str(exc).strip() or "no message").splitlines()[0][:300]
    return (
        f"internal error: {type(exc).__name__}: {first} (a bug in vqt; rerun with --debug for the traceback)"
    )


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="CPU threads for torch. Default: train.threads, else OMP_NUM_THREADS, else the cores the load "
    "average leaves free (on a busy machine fewer threads are faster).",
)
@click.version_option(package_name="vqtoolkit", prog_name="vqt")
@click.pass_context
def cli(ctx, debug, threads):
    """vqtoolkit: VQ-VAE tokenizers for speech, images and video.

    \b
    Examples:
      vqt train recipes/image_vqvae.yaml train.max_steps=200
      vqt validate recipes/speech_vqvae.yaml
      vqt plugins --all
    """
    ctx.ensure_object(dict)["debug"] = debug
    from vqtoolkit.threads import ENV, apply_threads

    if threads:
        os.environ[ENV] = str(threads)  # for worker processes too
    if threads or ctx.obj.get("choose_threads"):  # the `vqt` command; a caller in Python keeps its own
        apply_threads()


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include the built-in plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(show_all, as_json):
    """List installed plugins and what each registered.

    \b
    Example:
      vqt plugins --all --json
    """
    from vqtoolkit.plugins import plugin_listing

    rows = plugin_listing(show_all)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No third-party plugins installed (vqt plugins --all shows the built-ins).")
    for row in rows:
        if "error" in row:
            click.echo(f"{row['name']}  FAILED: {row['error']}")
            continue
        click.echo(row["name"] + ("  (built-in)" if row["builtin"] else ""))
        for kind, names in row["registered"].items():
            click.echo(f"  {kind}: {', '.join(names)}")


@cli.command()
@click.argument("recipe")
@click.argument("overrides", nargs=-1)
def validate(recipe, overrides):
    """Check a recipe (and dotted overrides): names, types and ranges, and that the model would fit in
    this machine's memory (it is built on the meta device, allocating nothing).

    \b
    Example:
      vqt validate recipes/image_vqvae.yaml train.max_steps=100 bottleneck.codebook_size=256
    """
    from vqtoolkit.config import load_recipe
    from vqtoolkit.model import check_model_size

    loaded = load_recipe(recipe, list(overrides))
    if loaded.tokenizer:
        click.echo(f"{recipe}: ok")
        return
    count = check_model_size(loaded, recipe)
    click.echo(f"{recipe}: ok ({count / 1e6:.2f} M parameters)")


@cli.command()
@click.argument("recipe", required=False)
@click.argument("overrides", nargs=-1)
@click.option("--resume", "resume_dir", metavar="RUN_DIR", help="Continue the run in RUN_DIR.")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Train data-parallel in this many processes (one per GPU), as torchrun would.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start afresh in a train.out_dir that holds a run (its files are replaced). Without it, such a "
    "folder is refused.",
)
def train(recipe, overrides, resume_dir, nproc, overwrite):
    """Train a model from a YAML recipe; dotted overrides change any key.

    Writes config.yaml, model.safetensors, metrics.jsonl, reconstruction pictures and a resumable
    state to train.out_dir, then evaluates on the held-out split and prints the metrics as JSON.
    Ctrl-C (SIGINT) or SIGTERM saves a checkpoint at the end of the current step and exits 130 or 143;
    --resume continues from it.

    --nproc N (or `torchrun --nproc-per-node N -m vqtoolkit train ...`) trains in N processes with
    DDP, train.batch_size being the global batch; rank 0 writes the files.

    \b
    Examples:
      vqt train recipes/image_vqvae.yaml
      vqt train recipes/image_vqvae.yaml train.max_steps=5000 train.out_dir=runs/fmnist
      vqt train --resume runs/fmnist train.max_steps=8000
      vqt train --overwrite recipes/image_vqvae.yaml train.out_dir=runs/fmnist
      vqt train --nproc 4 recipes/video_vqvae.yaml train.batch_size=32
    """
    from pathlib import Path

    from vqtoolkit import parallel
    from vqtoolkit.api import resolve_recipe, trainer_for
    from vqtoolkit.train.loop import refuse_existing_run
    from vqtoolkit.train.signals import Interrupted

    keep_freed_memory()  # every step allocates what the last one freed (see vqtoolkit/memory.py)
    passed_on = [*(["--resume", resume_dir] if resume_dir else []), *(["--overwrite"] if overwrite else [])]
    passed_on += [*([recipe] if recipe else []), *overrides]
    if not recipe and not resume_dir:
        raise click.UsageError("give a recipe, e.g. vqt train recipes/image_vqvae.yaml")
    recipe = resolve_recipe(recipe, overrides, resume_dir)
    world_size = nproc if nproc > 1 else parallel.current().world_size
    if recipe.train.batch_size % world_size:
        raise VQTError(
            f"train.batch_size: {recipe.train.batch_size} does not split evenly over {world_size} processes"
        )
    if not resume_dir and not overwrite:  # before any worker starts
        refuse_existing_run(Path(recipe.train.out_dir))
    if nproc > 1:  # this process launches the workers (each one runs this command without --nproc)
        sys.exit(parallel.launch(nproc, "train", passed_on))
    main_rank, finished = parallel.current().main, False
    try:
        trainer = trainer_for(recipe, resume_dir, overwrite)
        try:
            results = trainer.fit()
            finished = True
        except Interrupted as exc:  # SIGINT or SIGTERM: the trainer saved a checkpoint
            if main_rank:
                click.echo(str(exc), err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
            if main_rank:
                message = f"interrupted at step {trainer.step} (nothing saved since the last checkpoint)"
                click.echo(message, err=True)
            sys.exit(130)
    except VQTError:
        if main_rank:
            raise
        sys.exit(1)  # every rank meets the same mistake: rank 0 reports it, once
    finally:
        parallel.shutdown(together=finished)
    if main_rank:
        click.echo(json.dumps({"run_dir": str(trainer.run_dir), "step": trainer.step, **results}, indent=2))
        echo_usage(results, trainer.model)


@cli.command("eval")
@click.argument("run_dir")
@click.option("--data", "data_path", help="Evaluate on this data instead of the run's held-out split.")
@click.option("--batches", default=0, help="Stop after this many batches (0 = all).")
def eval_command(run_dir, data_path, batches):
    """Evaluate a trained model (or prior) on held-out data and print the metrics as JSON.

    For a prior run: its NLL in bits per code and the bound in bits per data dimension. RUN_DIR may
    also name a shipped model (speech).

    \b
    Examples:
      vqt eval runs/image_vqvae --data /usr/share/datasets/fashion-mnist
      vqt eval speech --data plugins/vqt_speech/data/heldout
      vqt eval runs/image_prior
    """
    from vqtoolkit.api import evaluate_run

    keep_freed_memory()
    results, model = evaluate_run(run_dir, data_path, batches)
    click.echo(json.dumps(results, indent=2))
    if model is not None:
        echo_usage(results, model)


def echo_usage(results: dict, model) -> None:
    """The held-out code usage of an autoencoder's results, in words, on stderr."""
    from vqtoolkit.train.evaluate import usage_summary

    bottleneck = getattr(model, "bottleneck", None)  # a prior has none
    line = usage_summary(results, bottleneck.codebook_sizes()) if bottleneck is not None else ""
    if line:
        click.echo(line, err=True)


def audio_model_option(help: str):
    return click.option("--audio-model", "audio_run_dir", metavar="RUN_DIR", help=help)


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--model", "run_dir", metavar="RUN_DIR",
    help="A trained run directory, or a shipped model by name (speech). Default: the shipped model of "
    "the first input's modality.",
)  # fmt: skip
@click.option("-o", "--output", help="A .codes file for one input, else a folder of codes files.")
@click.option(
    "--dataset", "dataset_dir", metavar="OUT",
    help="Write one code dataset to the folder OUT instead: Arrow shards, an index, a manifest and a "
    "report of skipped files (read it with vqtoolkit.data.CodesDataset or Hugging Face datasets). Rerun "
    "the same command after a kill to resume.",
)  # fmt: skip
@click.option(
    "--shard-files", type=click.IntRange(min=1), default=256, show_default=True, metavar="N",
    help="--dataset: files per shard (the unit a resumed run skips and a process takes).",
)  # fmt: skip
@click.option(
    "--nproc", type=click.IntRange(min=1), default=1, show_default=True,
    help="--dataset: tokenize in this many processes (one per GPU), as `torchrun --nproc-per-node N -m "
    "vqtoolkit tokenize ...` would; the dataset is the same as one process makes.",
)  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@audio_model_option("A speech run: videos also get their audio track's codes, in the same codes file.")
@click.option(
    "--codebooks",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Residual models (rvq, rfsq): keep the codes of the first N codebooks only, a lower bitrate that "
    "`vqt decode` decodes as it is. Default: all.",
)
def tokenize(inputs, run_dir, output, dataset_dir, shard_files, nproc, device, audio_run_dir, codebooks):
    """Turn media files (or folders of them) into codes files, or a whole corpus into a code dataset.

    Each codes file is a safetensors file with the integer codes and what is needed to decode them
    (modality, model hash, latent grid, codebook sizes, original size). A file that cannot be read is
    reported and skipped; the others are written, and the exit code is 1 at the end.

    With --dataset OUT, the codes of all inputs go into shards of --shard-files files in OUT, with an
    index (source path, shard, offset, length, grid, duration, model hash) and a manifest; files that
    cannot be read are listed in OUT/report.json and skipped. A rerun of the same command skips the shards
    already written, and gives the dataset an uninterrupted run would.

    \b
    Examples:
      vqt tokenize talk.wav -o talk.codes                    # the shipped speech model
      vqt tokenize shirt.png --model runs/image_vqvae -o shirt.codes
      vqt tokenize photos/ more.png --model runs/image_vqvae -o codes/
      vqt tokenize talk.flac --model runs/speech_vqvae -o talk.codes
      vqt tokenize film.mp4 --model runs/video_vqvae --audio-model runs/speech_vqvae -o film.codes
      vqt tokenize talk.wav --codebooks 2 -o talk.codes       # 2 of the speech model's 4 codebooks
      vqt tokenize corpus/ --model speech --dataset corpus_codes/
      vqt tokenize corpus/ --model speech --dataset corpus_codes/ --nproc 2
    """
    from pathlib import Path

    from tqdm import tqdm

    from vqtoolkit.inference.tokenizer import Tokenizer, codes_targets, modality_of_input
    from vqtoolkit.progress import progress
    from vqtoolkit.rundir import default_model_for

    fix_mmap_threshold()  # long media: keep the heap from fragmenting (see vqtoolkit/memory.py)
    if not run_dir:
        run_dir = default_model_for(modality_of_input(Path(inputs[0])), inputs[0])
    if dataset_dir or nproc > 1:
        if not dataset_dir:
            raise click.UsageError("--nproc splits a code dataset over processes: give --dataset OUT")
        if output or audio_run_dir:
            raise click.UsageError(
                f"--dataset writes one dataset: leave out {'-o' if output else '--audio-model'}"
            )
        tokenize_dataset(inputs, run_dir, dataset_dir, shard_files, nproc, device, codebooks)
        return
    if not output:
        raise click.UsageError("give -o (a .codes file or a folder), or --dataset OUT for a code dataset")
    tokenizer = Tokenizer.load(run_dir, device, codebooks or 0)
    audio = Tokenizer.load(audio_run_dir, device) if audio_run_dir else None
    files = tokenizer.media_files(list(inputs))
    output = Path(output)
    if output.suffix != ".codes" and output.exists() and not output.is_dir():
        raise VQTError(f"{output}: is a file, not a folder; give -o a folder or a name ending in .codes")
    if len(files) == 1:  # one input: its error, if any, is the one line the user sees
        target = output if output.suffix == ".codes" else output / (files[0].stem + ".codes")
        note = tokenizer.tokenize(files[0], target, audio)
        click.echo(one_line(f"note: {note}" if note else f"wrote {target}"), err=True)
        return
    if output.suffix == ".codes":
        raise VQTError(f"{output}: {len(files)} inputs write one codes file each; give -o a folder")
    failures = 0
    targets = codes_targets(files, output)  # refuses two inputs that would share a codes file
    bar = sys.stderr.isatty()  # off in logs: tqdm.write would wrap each error line in the bar's redraws
    for path, target in progress(list(zip(files, targets)), desc="tokenize", unit="file", disable=not bar):
        try:
            note = tokenizer.tokenize(path, target, audio)
            if note:
                tqdm.write(one_line(f"note: {note}"), file=sys.stderr)
        except VQTError as exc:
            failures += 1
            tqdm.write(one_line(f"error: {exc}"), file=sys.stderr)
    written = len(files) - failures
    click.echo(f"wrote {written} codes file{'s' * (written != 1)} to {output}", err=True)
    if failures:
        raise VQTError(f"{failures} of {len(files)} inputs could not be tokenized (see above)")


def tokenize_dataset(inputs, run_dir, dataset_dir, shard_files, nproc, device, codebooks) -> None:
    """`vqt tokenize ... --dataset OUT`, in this process or, with --nproc, in worker processes."""
    from vqtoolkit import parallel
    from vqtoolkit.api import tokenize_dataset as tokenize_corpus

    if nproc > 1:  # each worker runs this command without --nproc
        worker = [*inputs, "--model", str(run_dir), "--dataset", dataset_dir, "--device", device]
        worker += ["--shard-files", str(shard_files), *(["--codebooks", str(codebooks)] if codebooks else [])]
        sys.exit(parallel.launch(nproc, "tokenize", worker))
    main_rank = parallel.current().main
    try:
        report = tokenize_corpus(inputs, run_dir, dataset_dir, device, codebooks or 0, shard_files)
    except VQTError:
        if main_rank:
            raise
        sys.exit(1)  # every rank meets the same mistake: rank 0 reports it, once
    if report is None:
        return
    items = report["tokenized"]
    click.echo(f"wrote {items} item{'s' * (items != 1)} to {dataset_dir}", err=True)
    if report["skipped"]:
        skipped, report_file = len(report["skipped"]), os.path.join(dataset_dir, "report.json")
        raise VQTError(
            f"{skipped} of {report['files']} inputs could not be tokenized (listed in {report_file})"
        )


@cli.command()
@click.argument("codes")
@click.option(
    "--model", "run_dir", metavar="RUN_DIR",
    help="The run that made the codes, or a shipped model by name. Default: the shipped model of the codes' "
    "modality.",
)  # fmt: skip
@click.option("-o", "--output", required=True, help="The media file to write, e.g. recon.png.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@audio_model_option("The speech run that made the audio codes of a video: the output gets both streams.")
def decode(codes, run_dir, output, device, audio_run_dir):
    """Turn a codes file back into media at its original size.

    \b
    Example:
      vqt decode talk.codes -o talk.wav                      # codes of the shipped speech model
      vqt decode shirt.codes --model runs/image_vqvae -o shirt_recon.png
      vqt decode film.codes --model runs/video_vqvae --audio-model runs/speech_vqvae -o film.mp4
    """
    from pathlib import Path

    from vqtoolkit.inference.codes import read_codes
    from vqtoolkit.inference.tokenizer import Tokenizer
    from vqtoolkit.rundir import default_model_for

    fix_mmap_threshold()
    if not run_dir:
        run_dir = default_model_for(read_codes(codes)[1].modality, codes)
    audio = Tokenizer.load(audio_run_dir, device) if audio_run_dir else None
    note = Tokenizer.load(run_dir, device).decode_file(Path(codes), Path(output), audio)
    if note:
        click.echo(one_line(f"note: {note}"), err=True)
    click.echo(f"wrote {output}", err=True)


@cli.command("sample")
@click.option("--model", "run_dir", required=True, metavar="RUN_DIR", help="The VQ-VAE run.")
@click.option("--prior", "prior_dir", required=True, metavar="RUN_DIR", help="A prior run.")
@click.option("-n", "count", default=16, show_default=True, help="How many samples.")
@click.option("-o", "--output", required=True, metavar="FOLDER", help="Folder for the samples.")
@click.option("--temperature", default=1.0, show_default=True, help="Below 1: safer samples; above: wilder.")
@click.option("--seed", default=0, show_default=True, help="The same seed gives the same samples.")
@click.option("--naive", is_flag=True, help="Recompute the whole grid per position (slow; for checking).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
def sample_command(run_dir, prior_dir, count, output, temperature, seed, naive, device):
    """Generate new media: sample codes from a prior and decode them.

    Writes sample_000.png (or .wav, .mp4) ... and, for images, one grid.png of the first 64. Samples are
    drawn 64 at a time, so memory does not grow with -n.

    \b
    Example:
      vqt sample --model runs/image_vqvae --prior runs/image_prior -n 16 -o samples/
    """
    from pathlib import Path

    from vqtoolkit.inference.sample import sample_media
    from vqtoolkit.inference.tokenizer import Tokenizer

    if count < 1 or not 0 < temperature < float("inf"):
        raise VQTError(
            f"-n must be at least 1 and --temperature a number above 0, got {count} and {temperature}"
        )
    tokenizer = Tokenizer.load(run_dir, device)
    paths = sample_media(tokenizer, prior_dir, count, Path(output), temperature, seed, cached=not naive)
    click.echo(f"wrote {len(paths)} samples to {output}", err=True)


def main():
    import os

    from vqtoolkit.plugins import load_plugins, register_commands

    # A shell asking for completions (vqt completion) runs vqt at every TAB: the built-in plugins add
    # no commands, and loading them would cost torch's import each time.
    load_plugins(builtins="_VQT_COMPLETE" not in os.environ)
    register_commands(cli)
    cli(prog_name="vqt", obj={"choose_threads": True})
