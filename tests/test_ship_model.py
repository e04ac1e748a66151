"""Shipped models: tools/ship_model.py keeps a run's config and inference weights (fp16, or int8 with a
scale per row for the prefixes asked), and `vqt` loads them back as fp32."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import ROOT, vqt
from safetensors.torch import load_file, save_file
from vqt_image.dataset import image_dataset
from vqt_image.io import write_image

from vqtoolkit.errors import VQTError
from vqtoolkit.inference.codes import read_codes
from vqtoolkit.rundir import dequantized, int8_rows


def test_int8_rows_by_hand():
    weight = torch.tensor([[1.0, -2.0], [0.5, 0.25]])
    stored = int8_rows(weight)
    assert stored[".int8_scale"].tolist() == pytest.approx([2 / 127, 0.5 / 127], rel=1e-3)
    assert stored[".int8"].tolist() == [[64, -127], [127, 64]]  # 63.5 rounds to the even 64
    back = dequantized({"w.int8": stored[".int8"], "w.int8_scale": stored[".int8_scale"]}, "file")["w"]
    assert (back - weight).abs().max() <= 2 / 127 / 2 + 1e-3 and back.dtype == torch.float32


def test_a_stored_weight_without_its_scale_is_one_line():
    values = torch.zeros(3, 2, dtype=torch.int8)
    nan = torch.tensor([1.0, float("nan"), 1.0])
    for scale in ({}, {"w.int8_scale": torch.ones(2)}, {"w.int8_scale": nan}):
        with pytest.raises(VQTError, match="w.int8 has no matching per-row scale"):
            dequantized({"w.int8": values, **scale}, "model.safetensors")


@pytest.mark.hostile("run directories")
def test_a_shipped_model_loads_as_fp32_and_tokenizes_like_its_run(tiny_image_run, tmp_path):
    shipped = tmp_path / "shipped"
    command = [sys.executable, str(ROOT / "tools/ship_model.py"), str(tiny_image_run), str(shipped),
               "--int8", "encoder.", "--int8-min", "64"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True)
    weights = load_file(shipped / "model.safetensors")
    assert any(name.startswith("encoder.") and name.endswith(".int8") for name in weights)
    assert all(t.dtype in (torch.float16, torch.int8, torch.int64, torch.bool) for t in weights.values())
    size = (shipped / "model.safetensors").stat().st_size
    assert size < (tiny_image_run / "model.safetensors").stat().st_size
    picture = tmp_path / "shirt.png"
    write_image(picture, image_dataset("", "test", 1)[0])
    for run, name in ((tiny_image_run, "run.codes"), (shipped, "shipped.codes")):
        assert vqt("tokenize", picture, "--model", run, "-o", tmp_path / name).returncode == 0
    codes = [read_codes(tmp_path / name)[0] for name in ("run.codes", "shipped.codes")]
    assert (codes[0] == codes[1]).float().mean() > 0.9  # int8 weights move a few latents at most

    del weights[next(name for name in weights if name.endswith(".int8_scale"))]
    save_file(weights, shipped / "model.safetensors")
    broken = vqt("tokenize", picture, "--model", shipped, "-o", tmp_path / "x.codes")
    assert broken.returncode == 1 and "has no matching per-row scale" in broken.stderr
