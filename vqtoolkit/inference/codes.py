"""The codes file: a safetensors file holding integer codes and the metadata needed to decode them.

Tensors:  `codes`, int16 (int32 when a codebook has more than 32,767 codes), shape (*latent_grid) for
          one codebook or (Q, *latent_grid) for residual VQ.
Metadata (safetensors string map, JSON values):
          format = "vqtoolkit.inference.codes", version, modality, model_hash, latent_grid, codebook_sizes,
          original_shape (media grid before padding), media (reader metadata: size, sample rate, fps...),
          chunking (chunk and context lengths when the file was encoded as a stream).
A video's codes file may also hold its audio track: tensor `audio_codes` and metadata `audio` (the
audio codes' own metadata as one JSON object), aligned in time with the video from the first sample.
Readable with safetensors or numpy alone; nothing in it is executed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from vqtoolkit.errors import VQTError
from vqtoolkit.rundir import read_safetensors, save_tensors

FORMAT, VERSION = "vqtoolkit.inference.codes", 1


@dataclass
class CodesMeta:
    modality: str
    model_hash: str
    latent_grid: list[int]
    codebook_sizes: list[int]
    original_shape: list[int]
    media: dict[str, Any] = field(default_factory=dict)
    chunking: dict[str, int] = field(
        default_factory=dict
    )  # {"chunk", "context"} in input steps when streamed
    version: int = VERSION


def write_codes(
    path: str | Path,
    codes: torch.Tensor,
    meta: CodesMeta,
    audio: tuple[torch.Tensor, CodesMeta] | None = None,
) -> None:
    """Write codes (and, for a video, the codes of its audio track under `audio_codes` / `audio`)."""
    tensors, metadata = {"codes": _narrow(codes, meta)}, {"format": FORMAT}
    metadata.update({key: json.dumps(value) for key, value in asdict(meta).items()})
    if audio is not None:
        tensors["audio_codes"] = _narrow(*audio)
        metadata["audio"] = json.dumps(asdict(audio[1]))
    save_tensors(Path(path), tensors, metadata)


def _narrow(codes: torch.Tensor, meta: CodesMeta) -> torch.Tensor:
    return codes.to(torch.int16 if max(meta.codebook_sizes) <= 32767 else torch.int32)


def read_codes(path: str | Path) -> tuple[torch.Tensor, CodesMeta]:
    """Read and check a codes file: its metadata must agree with its data before anything decodes it."""
    codes, meta, _ = read_codes_with_audio(path)
    return codes, meta


def read_codes_with_audio(
    path: str | Path,
) -> tuple[torch.Tensor, CodesMeta, tuple[torch.Tensor, CodesMeta] | None]:
    path = Path(path)
    if path.is_dir():
        raise VQTError(f"{path}: is a directory, not a codes file")
    if not path.is_file():
        raise VQTError(f"{path}: no such codes file")
    try:
        tensors, header = read_safetensors(path)
    except VQTError as exc:
        raise VQTError(f"{path}: not a readable codes file ({_reason(exc, path)})") from None
    if header.get("format") != FORMAT or "codes" not in tensors:
        raise VQTError(f"{path}: not a vqtoolkit codes file")
    try:
        meta = CodesMeta(
            **{key: json.loads(header[key]) for key in CodesMeta.__dataclass_fields__ if key in header}
        )
        audio_meta = CodesMeta(**json.loads(header["audio"])) if "audio" in header else None
    except (ValueError, TypeError) as exc:
        raise VQTError(f"{path}: not a readable codes file ({str(exc).splitlines()[0][:200]})") from None
    codes = _checked(path, "codes", tensors["codes"], meta)
    if audio_meta is None or "audio_codes" not in tensors:
        return codes, meta, None
    return codes, meta, (_checked(path, "audio codes", tensors["audio_codes"], audio_meta), audio_meta)


def _reason(exc: VQTError, path: Path) -> str:
    """What read_safetensors said is wrong, without the path and its own wording around it."""
    reason = (
        str(exc).removeprefix(f"{path}: ").removeprefix("not a valid safetensors file, refusing to load it")
    )
    return reason.strip().removeprefix("(").removesuffix(")") or "not a safetensors file"


def _is_int_list(value: Any, least: int) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= least for v in value
    )


def _check_meta(path: Path, what: str, meta: CodesMeta) -> None:
    """Metadata of the right types, so that nothing downstream trips over a tampered header."""
    problems = []
    if not isinstance(meta.version, int) or isinstance(meta.version, bool):
        problems.append(f"version {meta.version!r} is not an integer")
    for name in ("modality", "model_hash"):
        if not isinstance(getattr(meta, name), str):
            problems.append(f"{name} {getattr(meta, name)!r} is not a string")
    for name, least in (("latent_grid", 1), ("codebook_sizes", 1), ("original_shape", 1)):
        if not _is_int_list(getattr(meta, name), least) or not getattr(meta, name):
            problems.append(f"{name} {getattr(meta, name)!r} is not a list of integers >= {least}")
    for name in ("media", "chunking"):
        if not isinstance(getattr(meta, name), dict):
            problems.append(f"{name} {getattr(meta, name)!r} is not a mapping")
    for name, least in (("chunk", 1), ("context", 0)):
        value = meta.chunking.get(name, least) if isinstance(meta.chunking, dict) else least
        if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= 2**40:
            problems.append(f"chunking.{name} {value!r} is not an integer within [{least}, 2^40]")
    if not problems and len(meta.original_shape) != len(meta.latent_grid):
        problems.append(f"original_shape {meta.original_shape} and latent_grid {meta.latent_grid} differ")
    if problems:
        raise VQTError(f"{path}: {what} metadata is invalid: {problems[0][:200]}")


def _checked(path: Path, what: str, codes: torch.Tensor, meta: CodesMeta) -> torch.Tensor:
    _check_meta(path, what, meta)
    if meta.version > VERSION:
        raise VQTError(
            f"{path}: codes format version {meta.version} is newer than this vqtoolkit reads ({VERSION})"
        )
    expected = ([len(meta.codebook_sizes)] if len(meta.codebook_sizes) > 1 else []) + list(meta.latent_grid)
    if list(codes.shape) != expected:
        raise VQTError(f"{path}: {what} have shape {list(codes.shape)} but the metadata says {expected}")
    if codes.is_floating_point() or codes.dtype == torch.bool:
        raise VQTError(f"{path}: {what} must be integers, found {codes.dtype}")
    levels = codes if len(meta.codebook_sizes) > 1 else codes.unsqueeze(0)
    for level, size in zip(levels, meta.codebook_sizes):
        if level.numel() and (level.min() < 0 or level.max() >= size):
            raise VQTError(f"{path}: a code lies outside [0, {size}) of its codebook")
    return codes.long()
