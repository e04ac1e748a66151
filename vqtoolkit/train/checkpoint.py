"""Run directories: atomic safetensors checkpoints, resumable state, and loading without pickle."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vqtoolkit.errors import VQTError

MODEL_FILE, STATE_FILE, CONFIG_FILE, METRICS_FILE = (
    "model.safetensors",
    "state.safetensors",
    "config.yaml",
    "metrics.jsonl",
)


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


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


def save_state(path: Path, optimizer: torch.optim.Optimizer, step: int, extra: dict | None = None) -> None:
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
    save_tensors(path, tensors, {"state": json.dumps(meta)})


def load_state(path: Path, optimizer: torch.optim.Optimizer) -> dict:
    tensors = load_tensors(path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["state"])
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
