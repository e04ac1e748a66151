"""Run directories: atomic safetensors checkpoints, resumable state, and loading without pickle."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vqtoolkit.errors import VQTError

MODEL_FILE, STATE_FILE, CONFIG_FILE, METRICS_FILE = (
    "model.safetensors",
    "state.safetensors",
    "config.yaml",
    "metrics.jsonl",
)


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # reading the umask means setting it: put it back at once


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    atomic_write_all([(path, write)])


def atomic_write_all(files: list[tuple[Path, Callable[[str], None]]]) -> None:
    """Several files written as `atomic_write` does, all synced before the first rename: a crash can leave
    some old and some new only in the moment between two renames, which happen in the order given."""
    temporaries = []
    try:
        for path, write in files:
            fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.", suffix=".tmp")
            os.close(fd)
            temporaries.append(tmp)
            write(tmp)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; give them the usual mode
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        for (path, _), tmp in zip(files, temporaries):
            os.replace(tmp, path)
    finally:
        for tmp in temporaries:
            if os.path.exists(tmp):
                os.unlink(tmp)


def tensors_writer(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return lambda tmp: save_file(tensors, tmp, metadata=metadata)


def save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    atomic_write(path, tensors_writer(tensors, metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load safetensors only; anything else (a pickle planted as a checkpoint) is refused unread."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise VQTError(f"{path}: file not found") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise VQTError(f"{path}: not a valid safetensors file, refusing to load it ({exc})") from None


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def state_tensors(
    optimizer: torch.optim.Optimizer, step: int, extra: dict | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Optimizer moments, step and RNG state as flat tensors (safetensors holds no Python objects)."""
    tensors, scalars = {}, {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {"step": step, "scalars": scalars, **(extra or {})}
    return tensors, {"state": json.dumps(meta)}


def load_state(path: Path, optimizer: torch.optim.Optimizer) -> dict:
    tensors = load_tensors(path)
    meta = json.loads(read_metadata(path)["state"])
    state_dict = optimizer.state_dict()
    restored: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            restored.setdefault(int(index), {})[name] = value
    for key, value in meta.pop("scalars").items():
        index, name = key.split(".", 1)
        restored.setdefault(int(index), {})[name] = value
    state_dict["state"] = restored
    optimizer.load_state_dict(state_dict)
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta


def read_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


# A checkpoint is two files, and a kill can land between their writes. Both carry the step. Both are
# written and synced to temporaries before either is renamed, the state first and the model last, so a
# mixed pair exists only if a kill lands between two renames; then model.safetensors is the older file and
# load_checkpoint refuses the pair instead of resuming old weights with new moments and data position.
# (The model file stays whole and usable by tokenize and eval either way.)
def save_checkpoint(
    run_dir: Path,
    weights: dict[str, torch.Tensor],
    model_meta: dict[str, str],
    optimizer: torch.optim.Optimizer,
    step: int,
    extra: dict | None = None,
) -> None:
    atomic_write_all(
        [
            (run_dir / STATE_FILE, tensors_writer(*state_tensors(optimizer, step, extra))),
            (run_dir / MODEL_FILE, tensors_writer(weights, {**model_meta, "step": str(step)})),
        ]
    )


def load_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Weights, optimizer state and RNG state of a run's last checkpoint; returns the state's metadata."""
    if not (run_dir / STATE_FILE).is_file():
        raise VQTError(f"{run_dir}: no {STATE_FILE} to resume from")
    model.load_state_dict(load_tensors(run_dir / MODEL_FILE))
    meta = load_state(run_dir / STATE_FILE, optimizer)
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


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the records logged after `step` (by a run killed after its last checkpoint: the resumed run
    logs those steps again) and a line cut short by the kill."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line + "\n")
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(kept)))


def load_model(run_dir: str | Path, device: str = "cpu"):
    """(model, recipe) from a run directory, weights through safetensors only."""
    from vqtoolkit.config import load_recipe
    from vqtoolkit.model import build_model

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / MODEL_FILE).is_file():
        raise VQTError(f"{run_dir}: not a vqt run directory (needs {CONFIG_FILE} and {MODEL_FILE})")
    recipe = load_recipe(run_dir / CONFIG_FILE)
    model = build_model(recipe)
    weights = load_tensors(run_dir / MODEL_FILE)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise VQTError(
            f"{run_dir / MODEL_FILE}: weights do not match {run_dir / CONFIG_FILE} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.to(device).eval(), recipe
