"""`vqt info`: what a run directory or a codes file holds, as a dict (for --json) or readable lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vqtoolkit.errors import VQTError
from vqtoolkit.plugins import registry
from vqtoolkit.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    file_hash,
    fitted_to_run,
    read_metadata,
    read_metrics,
)

MODEL_KINDS = {"vq": "VQ-VAE", "rvq": "VQ-VAE (residual VQ)", "gaussian": "VAE", "none": "autoencoder"}


def info(path: str | Path, model: str | Path | None = None) -> dict[str, Any]:
    """Describe a run directory or a codes file; with `model` (a run directory), say whether a codes file
    was made by it."""
    path = Path(path)
    if path.is_dir():
        if model:
            raise VQTError("--model applies to codes files, not run directories")
        return dataset_info(path) if (path / "manifest.json").is_file() else run_info(path)
    if path.is_file():
        return codes_info(path, model)
    raise VQTError(f"{path}: no such run directory or codes file")


def dataset_info(folder: Path) -> dict[str, Any]:
    """A code dataset (`vqt tokenize DIR --dataset OUT`): its model, items, codes and skipped files."""
    from vqtoolkit.data import REPORT, CodesDataset, read_json

    dataset = CodesDataset(folder)
    report = read_json(folder / REPORT) if (folder / REPORT).is_file() else {}
    manifest = dataset.manifest
    codes = sum(dataset.info(i)["length"] for i in range(dataset.items))
    described = {
        "path": str(folder),
        "kind": "code dataset",
        "modality": manifest.get("modality"),
        "model": manifest.get("model"),
        "model_hash": manifest.get("model_hash"),
        "codebook_sizes": dataset.codebook_sizes,
        "items": dataset.items,
        "codes": codes,
        "shards": manifest["shards"],
    }
    seconds = report.get("media_seconds")
    if isinstance(seconds, (int, float)):
        described["media_hours"] = round(seconds / 3600, 3)
    skipped = report.get("skipped")
    if isinstance(skipped, list):
        described["skipped_files"] = len(skipped)
    return described


def run_info(run_dir: Path) -> dict[str, Any]:
    from vqtoolkit.rundir import is_prior_run

    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / MODEL_FILE).is_file():
        raise VQTError(f"{run_dir}: not a vqt run directory (needs {CONFIG_FILE} and {MODEL_FILE})")
    metadata = read_metadata(run_dir / MODEL_FILE)
    step = metadata.get("step")
    described: dict[str, Any] = {"path": str(run_dir)}
    if is_prior_run(run_dir):
        described.update(prior_run_info(run_dir))
    else:
        from vqtoolkit.config import to_dict
        from vqtoolkit.rundir import load_model

        model, recipe = load_model(run_dir)
        bottleneck = to_dict(recipe)["bottleneck"]
        name = bottleneck.pop("name")
        described.update(
            {
                "kind": MODEL_KINDS.get(name, f"autoencoder ({name} bottleneck)"),
                "modality": recipe.data.modality,
                "encoder": recipe.model.encoder.name or "(modality default)",
                "decoder": recipe.model.decoder.name or "(modality default)",
                "latent_dim": recipe.model.latent_dim,
                "bottleneck": {"name": name, **bottleneck},
                "fitted_to_run": fitted_to_run(metadata),
                "codebook_sizes": model.bottleneck.codebook_sizes(),
                "downsampling": list(model.downsample),
                "parameters": sum(p.numel() for p in model.parameters()),
                "model_hash": file_hash(run_dir / MODEL_FILE),
            }
        )
    described["steps_trained"] = int(step) if step is not None else None
    described["max_steps"] = _max_steps(run_dir)
    described["final_metrics"] = final_metrics(run_dir)
    described["files"] = {
        f.name: f.stat().st_size
        for f in sorted(run_dir.iterdir())
        if f.is_file() and not f.name.startswith(".")
    }
    return described


def _max_steps(run_dir: Path) -> int:
    from vqtoolkit.config import load_recipe

    return load_recipe(run_dir / CONFIG_FILE, check=False).train.max_steps


def prior_run_info(run_dir: Path) -> dict[str, Any]:
    from vqtoolkit.rundir import load_prior

    prior, recipe, grid, tokenizer_hash = load_prior(run_dir)
    tokenizer = Path(recipe.tokenizer)
    modality = "?"
    if (tokenizer / CONFIG_FILE).is_file():
        from vqtoolkit.config import load_recipe

        modality = load_recipe(tokenizer / CONFIG_FILE, check=False).data.modality
    component = recipe.prior.name if recipe.prior and recipe.prior.name else "pixelcnn"
    return {
        "kind": f"prior ({component})",
        "modality": modality,
        "tokenizer": recipe.tokenizer,
        "tokenizer_hash": tokenizer_hash,
        "prior": {"name": component, **(recipe.prior.args if recipe.prior else {})},
        "codebook_sizes": [prior.codebook_size],
        "code_grid": grid,
        "parameters": sum(p.numel() for p in prior.parameters()),
        "model_hash": file_hash(run_dir / MODEL_FILE),
    }


def final_metrics(run_dir: Path) -> dict[str, Any]:
    """The last held-out evaluation logged in metrics.jsonl ({} when there is none)."""
    evaluations = [r for r in read_metrics(run_dir / METRICS_FILE) if r.get("split") == "eval"]
    return {k: v for k, v in evaluations[-1].items() if k != "split"} if evaluations else {}


def codes_info(path: Path, model: str | Path | None = None) -> dict[str, Any]:
    from vqtoolkit.inference.codes import read_codes_with_audio

    codes, meta, audio = read_codes_with_audio(path)
    described: dict[str, Any] = {"path": str(path), **codes_meta(meta)}
    if audio is not None:
        described["audio"] = codes_meta(audio[1])
    if model:
        model = Path(model)
        if not (model / MODEL_FILE).is_file():
            raise VQTError(f"{model}: not a vqt run directory (no {MODEL_FILE})")
        described["model"] = str(model)
        described["model_matches"] = file_hash(model / MODEL_FILE) == meta.model_hash
    return described


def codes_meta(meta) -> dict[str, Any]:
    media = dict(meta.media)
    source = media.pop("source", {})
    described = {
        "modality": meta.modality,
        "grid": meta.latent_grid,
        "codebook_sizes": meta.codebook_sizes,
        "codes": len(meta.codebook_sizes) * _product(meta.latent_grid),
        "original_shape": meta.original_shape,
        "media": media,
        "model_hash": meta.model_hash,
    }
    if source:
        described["source"] = source
    duration = _duration(meta, {**media, "source": source})
    if duration is not None:
        described["duration_s"] = duration
    if meta.chunking:
        described["chunking"] = meta.chunking
    return described


def _duration(meta, media: dict) -> float | None:
    """Seconds of media, when the codes' modality is installed and its first grid axis is time."""
    modalities = registry("modalities")
    if meta.modality not in modalities or not meta.original_shape:
        return None
    seconds = modalities.get(meta.modality).duration(media, meta.original_shape[0])
    return round(seconds, 3) if seconds is not None else None


def _product(values: list[int]) -> int:
    total = 1
    for value in values:
        total *= value
    return total


def format_info(described: dict[str, Any]) -> str:
    """Readable `key: value` lines; nested dicts indented, files with their sizes."""
    lines = []
    for key, value in described.items():
        label = key.replace("_", " ")
        if key == "files":
            lines.append(f"{label}:")
            lines += [f"  {name}  {human_size(size)}" for name, size in value.items()]
        elif isinstance(value, dict) and value:
            lines.append(f"{label}:")
            lines += [f"  {k.replace('_', ' ')}: {show(v, k)}" for k, v in value.items()]
        elif key == "model_matches":
            lines.append(
                f"{label}: {'yes' if value else 'NO (decode these codes with the model that made them)'}"
            )
        else:
            lines.append(f"{label}: {show(value, key)}")
    return "\n".join(lines)


GRIDS = ("grid", "code_grid", "original_shape", "downsampling", "size")


def show(value: Any, key: str = "") -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    if isinstance(value, list):
        return (" x " if key in GRIDS else ", ").join(map(str, value)) if value else "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={show(v)}" for k, v in value.items()) or "-"
    return str(value)


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)
