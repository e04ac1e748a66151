"""Run directories, below both training and inference: their files, atomic safetensors checkpoints,
resumable state, loading models and priors without pickle, and the device they run on."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from vqtoolkit.config import DEVICE_PATTERN, Component, load_recipe
from vqtoolkit.errors import VQTError
from vqtoolkit.files import atomic_write, atomic_write_all  # noqa: F401  (used by the trainer too)
from vqtoolkit.plugins import registry

MODEL_FILE, STATE_FILE, CONFIG_FILE, METRICS_FILE = (
    "model.safetensors",
    "state.safetensors",
    "config.yaml",
    "metrics.jsonl",
)


def tensors_writer(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return lambda tmp: Path(tmp).write_bytes(save_bytes(tensors, metadata=metadata))


def save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    atomic_write(path, tensors_writer(tensors, metadata))


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; anything else (a pickle planted as a checkpoint) is
    refused unread. Read as bytes, so any file name works (safetensors' own paths must be UTF-8)."""
    try:
        data = _bounded_read(Path(path))
        tensors = load_bytes(data)
        return tensors, _header_metadata(data[8 : 8 + int.from_bytes(data[:8], "little")])
    except FileNotFoundError:
        raise VQTError(f"{path}: file not found") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise VQTError(f"{path}: not a valid safetensors file, refusing to load it ({_line(exc)})") from None


MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit


def _bounded_read(path: Path) -> bytes:
    """The file's bytes, read no further than its header says the data goes; the header's claims are
    checked against the file's size before anything is allocated for the data."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header_length = int.from_bytes(f.read(8), "little")
        if size < 8 or header_length > min(size - 8, MAX_HEADER_BYTES):
            raise ValueError(f"its header claims {header_length} bytes, the file has {size}")
        header = json.loads(f.read(header_length))
        if not isinstance(header, dict):
            raise ValueError("its header is not a mapping")
        ends = [0]
        for name, info in header.items():
            offsets = info.get("data_offsets") if isinstance(info, dict) and name != "__metadata__" else None
            if name != "__metadata__" and not (
                isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            ):
                raise ValueError(f"tensor {str(name)[:50]!r} has no valid data offsets")
            ends.append(offsets[1] if offsets else 0)
        total = 8 + header_length + max(ends)
        if total != size:
            raise ValueError(f"its header describes {total} bytes, the file has {size}")
        f.seek(0)
        return f.read(total)


def _header_metadata(header: bytes) -> dict[str, str]:
    metadata = json.loads(header).get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("its metadata is not a map of strings")
    return metadata


def _line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load safetensors only; anything else (a pickle planted as a checkpoint) is refused unread. Weights
    stored as 8-bit integers with a scale per row (see `int8_rows`) come back as fp32."""
    return dequantized(read_safetensors(path)[0], path)


INT8, SCALE = ".int8", ".int8_scale"  # the suffixes of a weight stored by `int8_rows`


def int8_rows(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """A float weight (rows, ...) as int8 values and one fp16 scale per row (symmetric, round to nearest):
    a quarter of fp32's bytes, for shipped models whose size is capped."""
    rows = weight.float().flatten(1)
    scale = (rows.abs().amax(1) / 127).clamp(min=1e-12)
    values = (rows / scale[:, None]).round().clamp(-127, 127).to(torch.int8).view(weight.shape)
    return {INT8: values, SCALE: scale.half()}


def dequantized(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """`tensors` with every int8-stored weight put back as fp32; a stored pair that does not fit together
    (untrusted file) is one line."""
    out = {name: t for name, t in tensors.items() if not name.endswith((INT8, SCALE))}
    for name in [n[: -len(INT8)] for n in tensors if n.endswith(INT8)]:
        values, scale = tensors[name + INT8], tensors.get(name + SCALE)
        if (
            scale is None
            or values.dtype != torch.int8
            or values.ndim < 1
            or scale.shape != values.shape[:1]
            or not scale.is_floating_point()
            or not torch.isfinite(scale).all()
        ):
            raise VQTError(f"{path}: {name}{INT8} has no matching per-row scale ({name}{SCALE})")
        out[name] = (values.flatten(1).float() * scale.float()[:, None]).view(values.shape)
    return out


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


Optimizers = torch.optim.Optimizer | dict[str, torch.optim.Optimizer]


def _named(optimizers: Optimizers) -> dict[str, torch.optim.Optimizer]:
    # the main optimizer's tensors are `optim.*`; others' (a discriminator's) `optim_<name>.*`
    return {"": optimizers} if isinstance(optimizers, torch.optim.Optimizer) else optimizers


def state_tensors(
    optimizers: Optimizers,
    step: int,
    extra: dict | None = None,
    modules: dict[str, torch.nn.Module] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Optimizer moments, step, RNG state and the weights of `modules` trained beside the model (a
    discriminator, saved as `module.<name>.*`) as flat tensors (safetensors holds no Python objects)."""
    tensors, scalars = {}, {}
    for name, optimizer in _named(optimizers).items():
        prefix = f"optim_{name}" if name else "optim"
        for index, state in optimizer.state_dict()["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"{prefix}.{index}.{key}"] = value
                else:
                    scalars[f"{name}/{index}.{key}" if name else f"{index}.{key}"] = value
    for name, module in (modules or {}).items():
        tensors |= {f"module.{name}.{key}": value for key, value in module.state_dict().items()}
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {"step": step, "scalars": scalars, **(extra or {})}
    return tensors, {"state": json.dumps(meta)}


def load_state(path: Path, optimizers: Optimizers, modules: dict[str, torch.nn.Module] | None = None) -> dict:
    tensors = load_tensors(path)
    meta = json.loads(read_metadata(path)["state"])
    named = _named(optimizers)
    restored: dict[str, dict[int, dict]] = {name: {} for name in named}
    for key, value in tensors.items():
        if key.startswith("optim"):
            prefix, index, name = key.split(".", 2)
            owner = prefix.removeprefix("optim").removeprefix("_")
            if owner in restored:
                restored[owner].setdefault(int(index), {})[name] = value
    for key, value in meta.pop("scalars").items():
        owner, _, key = key.rpartition("/")
        index, name = key.split(".", 1)
        if owner in restored:
            restored[owner].setdefault(int(index), {})[name] = value
    for owner, optimizer in named.items():
        state_dict = optimizer.state_dict()
        state_dict["state"] = restored[owner]
        optimizer.load_state_dict(state_dict)
    for name, module in (modules or {}).items():
        prefix = f"module.{name}."
        weights = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
        if not weights:
            raise VQTError(f"{path}: holds no weights of the {name} to resume it")
        module.load_state_dict(weights)
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta


def fitted_to_run(metadata: dict[str, str]) -> dict[str, float]:
    """The bottleneck settings the trainer changed for the run's length (see Bottleneck.fit_to_run), as the
    model file records them; {} when it records none or something that is not a map of numbers."""
    try:
        fitted = json.loads(metadata.get("fitted_to_run", "{}"))
    except json.JSONDecodeError:
        return {}
    if not isinstance(fitted, dict):
        return {}
    return {str(k): v for k, v in fitted.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file, reading its header only."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if size > 100_000_000:
                raise ValueError(f"header of {size} bytes")
            return _header_metadata(f.read(size))
    except (OSError, ValueError, AttributeError) as exc:
        raise VQTError(f"{path}: not a valid safetensors file ({_line(exc)})") from None


# A checkpoint is two files, and a kill can land between their writes. Both carry the step. Both are
# written and synced to temporaries before either is renamed, the state first and the model last, so a
# mixed pair exists only if a kill lands between two renames; then model.safetensors is the older file and
# load_checkpoint refuses the pair instead of resuming old weights with new moments and data position.
# (The model file stays whole and usable by tokenize and eval either way.)
def save_checkpoint(
    run_dir: Path,
    weights: dict[str, torch.Tensor],
    model_meta: dict[str, str],
    optimizer: Optimizers,
    step: int,
    extra: dict | None = None,
    modules: dict[str, torch.nn.Module] | None = None,
) -> None:
    atomic_write_all(
        [
            (run_dir / STATE_FILE, tensors_writer(*state_tensors(optimizer, step, extra, modules))),
            (run_dir / MODEL_FILE, tensors_writer(weights, {**model_meta, "step": str(step)})),
        ]
    )


def load_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: Optimizers,
    modules: dict[str, torch.nn.Module] | None = None,
) -> dict:
    """Weights, optimizer state and RNG state of a run's last checkpoint; returns the state's metadata."""
    if not (run_dir / STATE_FILE).is_file():
        raise VQTError(f"{run_dir}: no {STATE_FILE} to resume from")
    load_weights(model, run_dir / MODEL_FILE, run_dir / CONFIG_FILE)
    meta = load_state(run_dir / STATE_FILE, optimizer, modules)
    model_step = read_metadata(run_dir / MODEL_FILE).get("step")  # None in runs from older versions
    if model_step is not None and int(model_step) != meta["step"]:
        raise VQTError(
            f"{run_dir}: {MODEL_FILE} is from step {model_step} but {STATE_FILE} from step {meta['step']} "
            "(the run was killed while saving a checkpoint); it cannot be resumed, start it again"
        )
    for stale in run_dir.glob(".*.safetensors.*.tmp"):  # temporaries of a write that a kill cut short
        stale.unlink()
    truncate_metrics(run_dir / METRICS_FILE, meta["step"])
    return meta


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl file ([] when there is none). A run directory is untrusted: a line
    that is not a record ({"step": int, "split": str, name: number, ...}), such as one cut short by a kill,
    is skipped, and so is a value that is not a number."""
    if not path.is_file():
        return []
    records = []
    with open(path, "rb") as file:
        while line := file.readline(MAX_METRICS_LINE + 1):
            if len(line) > MAX_METRICS_LINE:  # no record is this long: skip to the end of the line
                while line and not line.endswith(b"\n"):
                    line = file.readline(MAX_METRICS_LINE)
                continue
            try:
                record = json.loads(line)
            except ValueError:  # not JSON, or not UTF-8
                continue
            if (
                isinstance(record, dict)
                and _is_count(record.get("step"))
                and isinstance(record.get("split"), str)
            ):
                numbers = {k: v for k, v in record.items() if _is_number(v) and k != "step"}
                records.append({"step": record["step"], "split": record["split"], **numbers})
    return records


MAX_METRICS_LINE = 2**20


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the records logged after `step` (by a run killed after its last checkpoint: the resumed run
    logs those steps again) and a line cut short by the kill."""
    if not path.is_file():
        return
    kept = [json.dumps(record) + "\n" for record in read_metrics(path) if record.get("step", 0) <= step]
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(kept)))


def optional_state(model: torch.nn.Module) -> set[str]:
    """Buffers that only steer training (modules list them in `optional_state`): weights saved without
    them, by a model made before they existed, load with them as freshly built."""
    return {
        f"{prefix}.{name}" if prefix else name
        for prefix, module in model.named_modules()
        for name in getattr(module, "optional_state", ())
    }


def load_model(run_dir: str | Path, device: str = "cpu"):
    """(model, recipe) from a run directory, weights through safetensors only."""
    from vqtoolkit.model import build_model

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / MODEL_FILE).is_file():
        raise VQTError(f"{run_dir}: not a vqt run directory (needs {CONFIG_FILE} and {MODEL_FILE})")
    recipe = load_recipe(run_dir / CONFIG_FILE)
    model = build_model(recipe)
    load_weights(model, run_dir / MODEL_FILE, run_dir / CONFIG_FILE)
    return model.to(device).eval(), recipe


def load_weights(model: torch.nn.Module, path: Path, config: Path) -> None:
    """Load a weights file into a model built from `config`; a mismatch is one line."""
    weights, expected, optional = load_tensors(path), model.state_dict(), optional_state(model)
    for name in sorted(weights, key=lambda name: (name in optional, name)):  # a real weight first
        tensor = weights[name]
        if name in expected and tensor.shape != expected[name].shape:
            raise VQTError(
                f"{path}: tensor {name} is {tuple(tensor.shape)}, but the model of {config} has "
                f"{tuple(expected[name].shape)} (weights of another model, or an edited size?)"
            )
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [name for name in missing if name not in optional_state(model)]
    if missing or unexpected:
        raise VQTError(
            f"{path}: weights do not match {config} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """The torch device for `name` (auto, cpu, cuda, cuda:N, mps); `option` names where it was given."""
    if not re.fullmatch(DEVICE_PATTERN, name):
        raise VQTError(f"{option}: unknown device {name!r} (auto, cpu, cuda, cuda:N, mps)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VQTError(f"{option}: {name} was asked for but no GPU is available (use auto or cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise VQTError(f"{option}: {name} was asked for but this machine has {count} GPUs")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise VQTError(f"{option}: mps was asked for but is not available here (use auto or cpu)")
    return device


def is_prior_run(run_dir: str | Path) -> bool:
    config = Path(run_dir) / CONFIG_FILE
    return config.is_file() and bool(load_recipe(config, check=False).tokenizer)


def load_prior(run_dir: str | Path, device: str = "cpu"):
    """(prior, recipe, grid, tokenizer hash) from a prior run directory."""
    from vqtoolkit.plugins import registry

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / MODEL_FILE).is_file():
        raise VQTError(f"{run_dir}: not a vqt prior run directory (needs {CONFIG_FILE} and {MODEL_FILE})")
    recipe = load_recipe(run_dir / CONFIG_FILE)
    if not recipe.tokenizer:
        raise VQTError(f"{run_dir}: is not a prior run (its recipe names no tokenizer)")
    weights, meta = read_safetensors(run_dir / MODEL_FILE)
    if "grid" not in meta or "tokenizer_hash" not in meta or "embed.weight" not in weights:
        raise VQTError(f"{run_dir / MODEL_FILE}: not the weights of a prior")
    component = recipe.prior or Component()
    factory = registry("priors").get(component.name or "pixelcnn")
    codebook_size = weights["embed.weight"].shape[0]
    grid = json.loads(meta["grid"])
    prior = factory(codebook_size, len(grid), **component.args)
    prior.load_state_dict(weights)
    return prior.to(device).eval(), recipe, grid, meta["tokenizer_hash"]


def shipped_models() -> dict[str, Path]:
    """The run directories that modality plugins ship, by modality name."""
    return {entry.name: Path(entry.factory.default_model) for entry in registry("modalities")
            if entry.factory.default_model}  # fmt: skip


def resolve_model(model: str | Path) -> Path:
    """A run directory as given, or the shipped model of the modality it names (`--model speech`)."""
    path = Path(model)
    if path.exists() or os.sep in str(model) or str(model) not in shipped_models():
        return path  # load_model says what is wrong with a path that is no run directory
    return shipped_models()[str(model)]


def default_model_for(modality: str, what: str) -> Path:
    """The shipped model of `modality`, for a command given no --model."""
    shipped = shipped_models()
    if modality not in shipped:
        names = ", ".join(sorted(shipped)) or "none"
        raise VQTError(
            f"{what}: no --model given and the {modality} modality ships no default model "
            f"(shipped: {names}); pass --model RUN_DIR"
        )
    return shipped[modality]


@dataclass
class TrainedRun:
    """A trained autoencoder run, loaded for use: its model (eval mode, on `device`), its recipe and
    modality, and the hash of its weights (which codes files and priors record)."""

    run_dir: Path
    model: torch.nn.Module
    recipe: Any
    modality: Any
    model_hash: str
    device: torch.device


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", option: str = "--device") -> TrainedRun:
    """A run directory (or the name of a shipped model) whose bottleneck makes codes, loaded on `device`."""
    run_dir = resolve_model(run_dir)
    device = device if isinstance(device, torch.device) else resolve_device(device, option)
    model, recipe = load_model(run_dir, device)
    if not model.discrete:
        raise VQTError(f"{run_dir}: the model's bottleneck is continuous and has no codes to tokenize")
    modality = registry("modalities").get(recipe.data.modality)
    return TrainedRun(run_dir, model, recipe, modality, file_hash(run_dir / MODEL_FILE), device)
