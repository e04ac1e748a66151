"""`vqt report`: pictures of a trained run made with matplotlib, and a Markdown summary that shows them.

An autoencoder run gets reconstructions of held-out examples (drawn by the modality's `report_picture`:
the built-ins draw an image grid, speech waveforms and log-mel spectrograms, or video frame strips with
the helpers below), a codebook usage histogram and training curves. A prior run gets its training curves
and media decoded from its samples through its tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange

from vqtoolkit.config import Recipe, to_dict
from vqtoolkit.errors import VQTError
from vqtoolkit.modality import Modality
from vqtoolkit.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    fitted_to_run,
    read_metadata,
    read_metrics,
)

MATPLOTLIB_MISSING = "vqt report needs matplotlib: pip install 'vqtoolkit[report]'"
DPI = 80


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend, or a one-line error when it is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise VQTError(MATPLOTLIB_MISSING) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure, path: Path) -> Path:
    """Save as a PNG of at most 256 colours: a third of the size for spectrograms, the same to the eye."""
    from PIL import Image

    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    pyplot().close(figure)
    with Image.open(path) as picture:
        quantized = picture.convert("RGB").quantize(colors=256)
    quantized.save(path, optimize=True)
    return path


# ------------------------------------------------------------------ pictures


def tile(images: torch.Tensor, columns: int) -> torch.Tensor:
    """(N, C, H, W) -> one (H', W', C) picture, `columns` wide, with a 1-pixel white line between images."""
    rows = -(-len(images) // columns)
    blank = images.new_ones(rows * columns - len(images), *images.shape[1:])
    padded = torch.nn.functional.pad(torch.cat([images, blank]), (0, 1, 0, 1), value=1.0)
    return rearrange(padded, "(r n) c h w -> (r h) (n w) c", n=columns)[:-1, :-1].clamp(0, 1)


def show(axis, picture: torch.Tensor, title: str = "") -> None:
    """Draw an (H, W, C) picture in [0, 1] without axes."""
    if picture.shape[-1] == 1:
        axis.imshow(picture[..., 0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        axis.imshow(picture.numpy(), interpolation="nearest")
    axis.set_axis_off()
    if title:
        axis.set_title(title, fontsize=10)


def image_grid(originals: torch.Tensor, reconstructions: torch.Tensor | None, path: Path, columns: int = 4):
    """Images (N, C, H, W): originals | reconstructions side by side, or one grid of samples."""
    plt = pyplot()
    if reconstructions is None:
        panels = [("samples", originals)]
    else:
        panels = [("original", originals), ("reconstruction", reconstructions)]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for axis, (title, images) in zip(axes[0], panels):
        show(axis, tile(images, columns), title)
    return save(figure, path)


def paired(originals: torch.Tensor, reconstructions: torch.Tensor | None) -> list[tuple[str, torch.Tensor]]:
    """Rows to draw: each original followed by its reconstruction, or the samples alone."""
    if reconstructions is None:
        return [(f"sample {index}", item) for index, item in enumerate(originals)]
    return [
        row for pair in zip(originals, reconstructions) for row in zip(("original", "reconstruction"), pair)
    ]


def log_mel(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(T,) -> (80, frames) log10 mel magnitudes."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=256, n_mels=80, power=1.0)
    return mel(audio).clamp(min=1e-5).log10()


def envelope(clip: torch.Tensor, sample_rate: int, columns: int = 800):
    """(T,) -> the min and max of each of `columns` stretches, and their times: a waveform drawn as its
    envelope, which looks the same as every sample at this size and keeps the PNG small."""
    stretch = max(1, len(clip) // columns)
    pieces = rearrange(clip[: len(clip) // stretch * stretch], "(n s) -> n s", s=stretch)
    seconds = torch.arange(len(pieces)) * stretch / sample_rate
    return pieces.amin(1).numpy(), pieces.amax(1).numpy(), seconds.numpy()


def speech_comparison(
    originals: torch.Tensor, reconstructions: torch.Tensor | None, path: Path, sample_rate: int
):
    """Audio (N, 1, T): waveform and log-mel spectrogram of each clip, original above reconstruction."""
    plt = pyplot()
    rows = [(title, clip[0]) for title, clip in paired(originals, reconstructions)]
    figure, axes = plt.subplots(len(rows), 2, figsize=(10, 1.7 * len(rows)), squeeze=False)
    mels = [log_mel(clip, sample_rate) for _, clip in rows]
    low, high = min(m.min().item() for m in mels), max(m.max().item() for m in mels)
    for (title, clip), mel, (wave_axis, mel_axis) in zip(rows, mels, axes):
        low_env, high_env, seconds = envelope(clip, sample_rate)
        wave_axis.fill_between(seconds, low_env, high_env, color="tab:blue", linewidth=0)
        wave_axis.set_ylim(-1, 1)
        wave_axis.set_xlim(0, len(clip) / sample_rate)
        wave_axis.set_ylabel(title, fontsize=9)
        extent = (0, len(clip) / sample_rate, 0, mel.shape[0])
        mel_axis.imshow(mel.numpy(), origin="lower", aspect="auto", extent=extent, vmin=low, vmax=high)
        mel_axis.set_ylabel("mel band", fontsize=8)
    axes[0, 0].set_title("waveform", fontsize=10)
    axes[0, 1].set_title("log-mel spectrogram", fontsize=10)
    axes[-1, 0].set_xlabel("seconds")
    axes[-1, 1].set_xlabel("seconds")
    figure.tight_layout()
    return save(figure, path)


def frame_strips(originals: torch.Tensor, reconstructions: torch.Tensor | None, path: Path, frames: int = 8):
    """Clips (N, C, T, H, W): each clip's frames in a row, its reconstruction in the row below."""
    plt = pyplot()
    strips = paired(originals, reconstructions)
    width = 1.3 * min(frames, originals.shape[2])
    figure, axes = plt.subplots(len(strips), 1, figsize=(width, 1.45 * len(strips)), squeeze=False)
    for axis, (title, clip) in zip(axes[:, 0], strips):
        show(axis, tile(rearrange(clip[:, :frames], "c t h w -> t c h w"), columns=frames))
        axis.set_title(title, fontsize=9, loc="left")
    return save(figure, path)


def media_picture(modality: Modality, recipe: Recipe, originals, reconstructions, path: Path) -> Path | None:
    """The modality's own picture of held-out examples and their reconstructions (or of samples), or None
    when the modality draws none."""
    if modality.report_picture is None:
        return None
    modality.report_picture(originals, reconstructions, path, dict(recipe.data.options))
    return path


def usage_histogram(counts: list[torch.Tensor], path: Path) -> Path:
    """One panel per codebook: how often each code was used on held-out data, most used first."""
    from vqtoolkit.nn.quantize import usage_from_counts

    plt = pyplot()
    figure, axes = plt.subplots(1, len(counts), figsize=(6 * len(counts), 3), squeeze=False)
    for index, (axis, level) in enumerate(zip(axes[0], counts)):
        usage = usage_from_counts(level.double())
        ordered = level.sort(descending=True).values.numpy()
        axis.bar(range(len(ordered)), ordered, width=1.0, color="tab:blue")
        if ordered.max() > 100 * max(ordered[ordered > 0].min(initial=ordered.max()), 1):
            axis.set_yscale("log")  # a few codes used far more than the rest
        name = f"codebook {index}: " if len(counts) > 1 else ""
        used = int((level > 0).sum())
        axis.set_title(
            f"{name}{used}/{len(level)} codes used ({usage['used_fraction']:.0%}), "
            f"perplexity {usage['perplexity']:.1f}",
            fontsize=10,
        )
        axis.set_xlabel("codes, most used first")
        axis.set_ylabel("count on held-out data")
    figure.tight_layout()
    return save(figure, path)


CURVES = [  # (panel title, [(record key, label)]) for the training curves, when the records hold them
    ("loss", [("loss", "loss"), ("recon", "reconstruction")]),
    ("codebook usage (fraction of codes used)", [("usage", "training batch")]),
    ("codebook perplexity", [("perplexity", "training batch")]),
    ("bits per code", [("bits_per_code", "training batch")]),
]
EVAL_KEYS = {"recon": "recon_loss", "usage": "codebook_used_fraction", "perplexity": "codebook_perplexity"}


def training_curves(records: list[dict], metrics: tuple[str, ...], path: Path) -> Path | None:
    """One panel per logged quantity: training records as lines, held-out evaluations as points (a panel
    for each of the modality's metrics when there were several evaluations)."""
    plt = pyplot()
    train = [r for r in records if r.get("split") == "train"]
    evals = [r for r in records if r.get("split") == "eval"]
    panels = [(t, [s for s in series if any(s[0] in r for r in train)]) for t, series in CURVES]
    panels = [(title, series) for title, series in panels if series]
    if len(evals) > 1:
        panels += [(name, []) for name in metrics if any(name in r for r in evals)]
    if not panels:
        return None
    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.9 * rows), squeeze=False)
    for axis, (title, series) in zip(axes.flat, panels):
        for key, label in series:
            points = [(r["step"], r[key]) for r in train if key in r]
            axis.plot(*zip(*points), label=label, linewidth=1.2)
            eval_key = EVAL_KEYS.get(key, key)
            marked = [(r["step"], r[eval_key]) for r in evals if eval_key in r]
            if marked:
                held_out = "held-out" if series[0][0] != "loss" else f"{label} (held-out)"
                axis.plot(*zip(*marked), "o", label=held_out, markersize=5)
        if not series:  # a held-out metric only
            axis.plot(*zip(*[(r["step"], r[title]) for r in evals if title in r]), "o-", label="held-out")
        values = [r[key] for key, _ in series for r in train if key in r]
        if title == "loss" and min(values) > 0 and max(values) > 10 * min(values):  # orders of magnitude
            axis.set_yscale("log")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step")
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_axis_off()
    figure.tight_layout()
    return save(figure, path)


# ------------------------------------------------------------------ the report


@torch.no_grad()
def autoencoder_pictures(run_dir: Path, out_dir: Path, device: str, examples: int, batches: int) -> dict:
    from vqtoolkit.plugins import registry
    from vqtoolkit.rundir import load_model
    from vqtoolkit.train.data import eval_loader, make_dataset

    model, recipe = load_model(run_dir, device)
    modality = registry("modalities").get(recipe.data.modality)
    dataset = make_dataset(recipe, modality, "test")
    options = dict(recipe.data.options)
    if modality.report_examples:
        originals = modality.report_examples(dataset, options, examples)
    else:
        originals = torch.stack([dataset[i] for i in range(min(examples, len(dataset)))])
    reconstructions = reconstruct(model, originals, modality, device)
    pictures = {}
    picture = media_picture(
        modality, recipe, originals, reconstructions, out_dir / modality.report_picture_name
    )
    if picture:
        pictures["reconstructions"] = picture
    if model.discrete:
        counts = code_counts(model, eval_loader(dataset, recipe.train.batch_size), device, batches)
        pictures["codebook usage"] = usage_histogram(counts, out_dir / "codebook_usage.png")
    return {"recipe": recipe, "modality": modality, "pictures": pictures, "model": model}


def reconstruct(model, originals: torch.Tensor, modality: Modality, device: str) -> torch.Tensor:
    from vqtoolkit.inference.stream import crop_to, pad_to_multiple

    padded = pad_to_multiple(originals.to(device), model.downsample)
    recon = model.reconstruct(padded).float().cpu()
    return crop_to(recon, list(originals.shape[1:])).clamp(*modality.value_range)


def code_counts(model, loader, device: str, batches: int) -> list[torch.Tensor]:
    """Per codebook, how often each code is chosen for the held-out data (the first `batches` batches)."""
    sizes = model.bottleneck.codebook_sizes()
    counts = [torch.zeros(size, dtype=torch.long) for size in sizes]
    for index, batch in enumerate(loader):
        if batches and index >= batches:
            break
        codes = model.encode(batch.to(device)).cpu()
        levels = rearrange(codes, "b q ... -> q (b ...)") if len(sizes) > 1 else codes.reshape(1, -1)
        for level, (count, size) in enumerate(zip(counts, sizes)):
            count += torch.bincount(levels[level], minlength=size)
    return counts


@torch.no_grad()
def prior_pictures(run_dir: Path, out_dir: Path, device: str, samples: int, seed: int) -> dict:
    from vqtoolkit.inference.tokenizer import Tokenizer
    from vqtoolkit.nn.pixelcnn_sampling import sample
    from vqtoolkit.rundir import load_prior

    prior, recipe, grid, tokenizer_hash = load_prior(run_dir, device)
    tokenizer = Tokenizer.load(recipe.tokenizer, device)
    if tokenizer_hash != tokenizer.model_hash:
        raise VQTError(f"{run_dir}: its tokenizer {recipe.tokenizer} has changed since the prior was trained")
    modality = tokenizer.modality
    count = min(samples, modality.report_samples)
    generator = torch.Generator(device=tokenizer.device).manual_seed(seed)
    codes = sample(prior, (count, *grid), generator=generator)
    media = tokenizer.model.decode(codes).float().clamp(*modality.value_range).cpu()
    picture = media_picture(modality, tokenizer.recipe, media, None, out_dir / "samples.png")
    pictures = {"samples": picture} if picture else {}
    return {"recipe": recipe, "modality": modality, "pictures": pictures, "tokenizer": tokenizer}


def write_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    device: str = "cpu",
    examples: int = 16,
    batches: int = 0,
    samples: int = 16,
    seed: int = 0,
) -> Path:
    """Write the pictures and report.md of a run to `out_dir` (default: RUN_DIR/report); returns report.md."""
    from vqtoolkit.rundir import is_prior_run

    pyplot()  # fail early, before loading anything, when matplotlib is missing
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / MODEL_FILE).is_file():
        raise VQTError(f"{run_dir}: not a vqt run directory (needs {CONFIG_FILE} and {MODEL_FILE})")
    out_dir = Path(out_dir) if out_dir else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    prior = is_prior_run(run_dir)
    if prior:
        made = prior_pictures(run_dir, out_dir, device, samples, seed)
    else:
        made = autoencoder_pictures(run_dir, out_dir, device, examples, batches)
    records = read_metrics(run_dir / METRICS_FILE)
    metrics = () if prior else made["modality"].metrics
    curves = training_curves(records, metrics, out_dir / "training_curves.png")
    if curves:
        made["pictures"]["training curves"] = curves
    path = out_dir / "report.md"
    path.write_text(markdown(run_dir, made, records, prior))
    return path


def markdown(run_dir: Path, made: dict, records: list[dict], prior: bool) -> str:
    recipe: Recipe = made["recipe"]
    metadata = read_metadata(run_dir / MODEL_FILE)
    step = metadata.get("step", "?")
    lines = [f"# Run report: `{run_dir.name}`", ""]
    facts = summary(recipe, made, prior, step)
    fitted = fitted_to_run(metadata)
    if fitted and "bottleneck" in facts:
        settings = describe({key: number(value) for key, value in fitted.items()})
        facts["bottleneck"] += f"; trained at {settings} (fitted to the run's {recipe.train.max_steps} steps)"
    lines += [f"- **{key}**: {value}" for key, value in facts.items()]
    final = next((r for r in reversed(records) if r.get("split") == "eval"), None)
    if final:
        lines += ["", "## Held-out metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {number(value)} |" for key, value in final.items() if key not in ("split",)]
    for title, picture in made["pictures"].items():
        lines += ["", f"## {title.capitalize()}", "", f"![{title}]({picture.name})"]
    config = (run_dir / CONFIG_FILE).read_text().rstrip()
    lines += ["", "## Recipe", "", "```yaml", config, "```", ""]
    return "\n".join(lines)


def summary(recipe: Recipe, made: dict, prior: bool, step) -> dict[str, str]:
    modality: Modality = made["modality"]
    data = recipe.data.path or "the shipped sample"
    if prior:
        component = recipe.prior.name if recipe.prior and recipe.prior.name else "pixelcnn"
        args = recipe.prior.args if recipe.prior else {}
        return {
            "kind": f"prior ({component}) over {modality.name} codes",
            "tokenizer": f"`{recipe.tokenizer}`",
            "prior": f"{component} {describe(args)}",
            "steps trained": str(step),
            "batch size": str(recipe.train.batch_size),
            "learning rate": f"{recipe.optim.lr:g} ({recipe.optim.schedule})",
        }
    model = made["model"]
    bottleneck = to_dict(recipe)["bottleneck"]
    return {
        "modality": modality.name,
        "data": f"{data} (channels {recipe.data.channels}, {describe(recipe.data.options)})",
        "encoder / decoder": f"{recipe.model.encoder.name or modality.encoder} / "
        f"{recipe.model.decoder.name or modality.decoder}, latent dim {recipe.model.latent_dim}",
        "bottleneck": f"{bottleneck.pop('name')} {describe(bottleneck)}",
        "downsampling": " x ".join(map(str, model.downsample)) or "none",
        "parameters": f"{sum(p.numel() for p in model.parameters()):,}",
        "steps trained": str(step),
        "batch size": str(recipe.train.batch_size),
        "learning rate": f"{recipe.optim.lr:g} ({recipe.optim.schedule})",
    }


def describe(options: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in options.items())


def number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
