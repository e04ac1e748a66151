"""Fuzzing the readers: hypothesis on the codes reader, byte flips of real media through every reader.

A reader gives a valid read or a VQTError naming the file: nothing else, no crash, no hang.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from vqtoolkit.errors import VQTError
from vqtoolkit.inference.codes import CodesMeta, read_codes_with_audio, write_codes

FUZZ = ROOT / "benchmarks" / "fuzz.py"
FIELDS = ["format", "version", "modality", "model_hash", "latent_grid", "codebook_sizes", "original_shape",
          "media", "chunking", "audio"]  # fmt: skip
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def read_or_refuse(path: Path):
    """The codes reader's contract: a result that agrees with itself, or one VQTError line naming the file."""
    try:
        codes, meta, audio = read_codes_with_audio(path)
    except VQTError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc), str(exc)
        return None
    for tensor, info in [(codes, meta)] + ([audio] if audio else []):
        levels = tensor if len(info.codebook_sizes) > 1 else tensor[None]
        assert list(levels.shape[1:]) == info.latent_grid and len(levels) == len(info.codebook_sizes)
        for level, size in zip(levels, info.codebook_sizes):
            assert level.numel() == 0 or (0 <= level.min() and level.max() < size)
    return codes


def valid_codes(path: Path) -> Path:
    meta = CodesMeta("image", "0123456789abcdef", [3, 4], [16], [10, 13], {"height": 10, "width": 13})
    audio_meta = CodesMeta("speech", "fedcba9876543210", [5], [8, 8], [40], {"sample_rate": 16000})
    write_codes(path, torch.randint(0, 16, (3, 4)), meta, (torch.randint(0, 8, (2, 5)), audio_meta))
    return path


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)
plausible = {  # values near the valid ones, where the bugs hide
    "format": st.just('"vqtoolkit.inference.codes"') | st.just("vqtoolkit.inference.codes"),
    "version": st.sampled_from(["1", "2", "0", '"1"', "1.5", "true", "null"]),
    "latent_grid": st.lists(st.integers(-2, 5), max_size=3).map(json.dumps),
    "codebook_sizes": st.lists(st.integers(-1, 40), max_size=3).map(json.dumps),
    "original_shape": st.lists(st.integers(-1, 20), max_size=3).map(json.dumps),
}


@st.composite
def codes_files(draw):
    metadata = {}
    for name in FIELDS:
        choice = draw(st.sampled_from(["valid", "plausible", "json", "text", "absent"]))
        if choice == "valid" or (choice == "plausible" and name not in plausible):
            metadata[name] = {"format": "vqtoolkit.inference.codes", "version": "1", "modality": '"image"',
                              "model_hash": '"abc"', "latent_grid": "[2, 3]", "codebook_sizes": "[8]",
                              "original_shape": "[7, 11]", "media": "{}", "chunking": "{}",
                              "audio": draw(st.sampled_from(["{}", "[]", "1"]))}[name]  # fmt: skip
        elif choice == "plausible":
            metadata[name] = draw(plausible[name])
        elif choice == "json":
            metadata[name] = json.dumps(draw(json_values))
        elif choice == "text":
            metadata[name] = draw(st.text(max_size=10))
    dtype = draw(
        st.sampled_from([torch.int16, torch.int32, torch.int64, torch.uint8, torch.float32, torch.bool])
    )
    shape = draw(st.lists(st.integers(0, 4), max_size=3))
    tensors = {"codes": torch.randint(-2, 12, shape).to(dtype)}
    if draw(st.booleans()):
        tensors["audio_codes"] = torch.randint(0, 9, draw(st.lists(st.integers(0, 3), max_size=2)))
    return tensors, metadata


@SETTINGS
@given(codes_files())
def test_codes_reader_on_random_metadata_and_tensors(tmp_path, drawn):
    tensors, metadata = drawn
    path = tmp_path / "random.codes"
    save_file(tensors, str(path), metadata=metadata)
    read_or_refuse(path)


@settings(SETTINGS, max_examples=60)
@given(st.binary(max_size=300))
def test_codes_reader_on_random_bytes(tmp_path, data):
    path = tmp_path / "bytes.codes"
    path.write_bytes(data)
    assert read_or_refuse(path) is None


@settings(SETTINGS, max_examples=150)
@given(st.data())
def test_codes_reader_on_mutated_valid_files(tmp_path, data):
    path = valid_codes(tmp_path / "valid.codes")
    content = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(content) - 1))
        content[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        content = content[: data.draw(st.integers(0, len(content)))]
    path.write_bytes(bytes(content))
    read_or_refuse(path)


def test_valid_codes_file_reads_back(tmp_path):
    codes = read_or_refuse(valid_codes(tmp_path / "valid.codes"))
    assert codes is not None and codes.shape == (3, 4)


def load_fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_benchmark", FUZZ)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_worker_counts_crashes_and_hangs_and_carries_on(tmp_path):
    worker = load_fuzz().Worker(timeout=1)
    try:
        outcomes = [
            worker.run(f"selftest_{kind}", tmp_path)["outcome"] for kind in ("ok", "crash", "hang", "ok")
        ]
        assert outcomes == ["ok", "crash", "hang", "ok"] and worker.starts == 3
    finally:
        worker.close()


def test_byte_flip_fuzz_sample_of_every_reader(tmp_path):
    report = tmp_path / "fuzz.json"
    result = subprocess.run(
        [sys.executable, str(FUZZ), "--cases", "40", "--seed", "3", "--timeout", "20", "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = json.loads(report.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    totals = results["totals"]
    assert totals["unexpected"] == totals["crash"] == totals["hang"] == 0, results["failures"]
    assert totals["ok"] + totals["clean error"] == 40 and totals["ok"] > 0 and totals["clean error"] > 0
    assert len(results["readers"]) >= 8  # the sample reaches (nearly) every reader
