"""The speech model that ships with the toolkit: found with no --model, loaded with no network, and the
same codes for the same file on every run."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import ROOT, run_vqt, vqt
from vqt_speech import SHIPPED_MODEL
from vqt_speech.io import read_audio

from vqtoolkit.config import load_recipe
from vqtoolkit.inference.codes import read_codes
from vqtoolkit.inference.tokenizer import Tokenizer

CLIP = ROOT / "plugins" / "vqt_speech" / "data" / "heldout" / "asterisk-it" / "agent-alreadyon.g722"
NO_NETWORK = ["unshare", "--net"] if shutil.which("unshare") else []


def test_the_shipped_model_is_the_speech_recipe_and_small():
    shipped = load_recipe(SHIPPED_MODEL / "config.yaml")
    recipe = load_recipe(ROOT / "recipes" / "speech_vqvae.yaml")
    assert (shipped.model, shipped.bottleneck) == (recipe.model, recipe.bottleneck)
    assert (SHIPPED_MODEL / "model.safetensors").stat().st_size <= 20 * 2**20
    assert (SHIPPED_MODEL / "MODEL_CARD.md").is_file()


@pytest.mark.skipif(not NO_NETWORK, reason="needs unshare to take the network away")
def test_tokenize_and_decode_with_no_model_and_no_network_repeat_the_same_codes(tmp_path):
    for run in ("first", "second"):
        result = run_vqt("tokenize", str(CLIP), "-o", str(tmp_path / f"{run}.codes"), prefix=NO_NETWORK,
                         env={"OMP_NUM_THREADS": "1"})  # fmt: skip
        assert result.returncode == 0, result.stderr
    first, meta = read_codes(tmp_path / "first.codes")
    second, _ = read_codes(tmp_path / "second.codes")
    assert torch.equal(first, second)
    assert meta.codebook_sizes == [1024] * 4 and first.shape == (4, meta.latent_grid[0])
    assert meta.latent_grid[0] == -(-read_audio(CLIP)[0].shape[-1] // 320)  # 50 frames per second

    result = vqt("decode", tmp_path / "first.codes", "-o", tmp_path / "back.wav")
    assert result.returncode == 0, result.stderr
    assert read_audio(tmp_path / "back.wav")[0].shape == read_audio(CLIP)[0].shape


def test_model_speech_names_the_shipped_model_and_a_run_directory_still_works(tmp_path):
    by_name = Tokenizer.load("speech", "cpu")
    assert by_name.run_dir == SHIPPED_MODEL
    result = vqt("tokenize", CLIP, "--model", "speech", "-o", tmp_path / "named.codes")
    assert result.returncode == 0, result.stderr
    copy = tmp_path / "run"
    shutil.copytree(SHIPPED_MODEL, copy)
    result = vqt("tokenize", CLIP, "--model", copy, "-o", tmp_path / "copied.codes")
    assert result.returncode == 0, result.stderr
    assert torch.equal(read_codes(tmp_path / "named.codes")[0], read_codes(tmp_path / "copied.codes")[0])


def test_no_shipped_model_for_a_modality_is_one_line(tmp_path):
    image = ROOT / "docs" / "quickstart" / "img" / "ankle-boot.png"
    result = vqt("tokenize", image, "-o", tmp_path / "boot.codes")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {image}: no --model given and the image modality ships no default model (shipped: speech); "
        "pass --model RUN_DIR"
    ]
