"""`vqt tokenize` / `vqt decode` on real PNG files with a real trained model."""

import json
import shutil

import numpy as np
import torch
from conftest import run_vqt, vqt
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file, save_file
from vqt_image.dataset import image_dataset
from vqt_image.io import read_image, write_image

from vqtoolkit.inference.stream import pad_to_multiple
from vqtoolkit.rundir import load_model


def odd_sized_picture(path, height=30, width=26):
    """A real Fashion-MNIST picture resized to a size the 4x downsampling does not divide."""
    image = image_dataset("", "test", 1)[3]
    pixels = torch.nn.functional.interpolate(image[None], size=(height, width), mode="bilinear")[0]
    write_image(path, pixels)
    return path


def test_tokenize_then_decode_reproduces_the_models_reconstruction(tiny_image_run, tmp_path):
    picture = odd_sized_picture(tmp_path / "shirt.png")
    codes_path, recon_path = tmp_path / "shirt.codes", tmp_path / "recon.png"
    assert (
        run_vqt("tokenize", str(picture), "--model", str(tiny_image_run), "-o", str(codes_path)).returncode
        == 0
    )
    result = run_vqt("decode", str(codes_path), "--model", str(tiny_image_run), "-o", str(recon_path))
    assert result.returncode == 0, result.stderr

    model, _ = load_model(tiny_image_run)
    image, _ = read_image(picture)
    expected = model.reconstruct(pad_to_multiple(image[None], model.downsample))[0, :, :30, :26].clamp(0, 1)
    write_image(tmp_path / "expected.png", expected)
    decoded = np.asarray(Image.open(recon_path))
    assert decoded.shape == (30, 26)  # original size restored
    assert np.array_equal(decoded, np.asarray(Image.open(tmp_path / "expected.png")))


def test_codes_file_is_plain_safetensors_with_metadata(tiny_image_run, tmp_path):
    picture = odd_sized_picture(tmp_path / "a.png")
    vqt("tokenize", str(picture), "--model", str(tiny_image_run), "-o", str(tmp_path / "a.codes"))
    codes = load_numpy(str(tmp_path / "a.codes"))["codes"]  # numpy alone reads it
    assert codes.shape == (8, 7) and codes.dtype == np.int16 and 0 <= codes.min() and codes.max() < 32
    with safe_open(str(tmp_path / "a.codes"), "np") as f:
        meta = {k: v for k, v in f.metadata().items()}
    assert meta["format"] == "vqtoolkit.inference.codes" and json.loads(meta["version"]) == 1
    assert json.loads(meta["modality"]) == "image" and json.loads(meta["latent_grid"]) == [8, 7]
    assert json.loads(meta["codebook_sizes"]) == [32] and json.loads(meta["original_shape"]) == [30, 26]
    assert len(json.loads(meta["model_hash"])) == 16


def test_many_inputs_and_folders_with_a_bad_file(tiny_image_run, tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png", "c.png"):
        odd_sized_picture(folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    result = vqt("tokenize", str(folder), "--model", str(tiny_image_run), "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "broken.png" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.codes", "b.codes", "c.codes"]
    assert "1 of 4 inputs could not be tokenized" in result.stderr


def test_codes_from_another_model_are_refused(tiny_image_run, tmp_path):
    picture = odd_sized_picture(tmp_path / "a.png")
    vqt("tokenize", str(picture), "--model", str(tiny_image_run), "-o", str(tmp_path / "a.codes"))
    other = tmp_path / "other"
    shutil.copytree(tiny_image_run, other)
    weights = load_file(other / "model.safetensors")
    weights["decoder.net.0.bias"] += 0.1
    save_file(weights, other / "model.safetensors")
    result = vqt("decode", str(tmp_path / "a.codes"), "--model", str(other), "-o", str(tmp_path / "x.png"))
    assert result.returncode == 1 and "was made by another model" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_tampered_codes_are_rejected_before_decoding(tiny_image_run, tmp_path):
    picture = odd_sized_picture(tmp_path / "a.png")
    vqt("tokenize", str(picture), "--model", str(tiny_image_run), "-o", str(tmp_path / "a.codes"))
    with safe_open(str(tmp_path / "a.codes"), "pt") as f:
        meta, codes = f.metadata(), f.get_tensor("codes")
    cases = {
        "shape.codes": ({"codes": codes[:4]}, meta, "but the metadata says [8, 7]"),
        "range.codes": ({"codes": codes + 40}, meta, "outside [0, 32)"),
        # the edges: one code equal to the codebook size, one below 0; both must be caught
        "size.codes": ({"codes": codes.index_fill(1, torch.tensor([0]), 32)}, meta, "outside [0, 32)"),
        "negative.codes": ({"codes": codes.index_fill(1, torch.tensor([0]), -1)}, meta, "outside [0, 32)"),
        "newer.codes": ({"codes": codes}, {**meta, "version": "2"}, "codes format version 2 is newer"),
        "rank.codes": (
            {"codes": codes},
            {**meta, "original_shape": "[30]"},
            "original_shape [30] and latent_grid",
        ),
        "modality.codes": ({"codes": codes}, {**meta, "modality": '"speech"'}, "holds speech codes"),
        "plain.codes": ({"codes": codes}, {}, "not a vqtoolkit codes file"),
    }
    for name, (tensors, metadata, message) in cases.items():
        save_file(tensors, tmp_path / name, metadata=metadata)
        result = vqt(
            "decode", str(tmp_path / name), "--model", str(tiny_image_run), "-o", str(tmp_path / "x.png")
        )
        assert result.returncode == 1 and message in result.stderr, (name, result.stderr)
    (tmp_path / "pickle.codes").write_bytes(b"\x80\x04K\x01.")
    result = vqt("decode", str(tmp_path / "pickle.codes"), "--model", str(tiny_image_run), "-o", "x.png")
    assert result.returncode == 1 and "not a readable codes file" in result.stderr


def test_wrong_kind_of_file_and_continuous_models_are_clear_errors(tiny_image_run, tmp_path):
    (tmp_path / "speech.wav").write_bytes(b"RIFF")
    result = vqt("tokenize", str(tmp_path / "speech.wav"), "--model", str(tiny_image_run), "-o", "x.codes")
    assert result.returncode == 1
    assert f"speech.wav: the image model in {tiny_image_run} cannot read this file" in result.stderr
    missing = vqt("tokenize", "a.png", "--model", str(tmp_path / "nothing"), "-o", "x.codes")
    assert missing.returncode == 1 and "not a vqt run directory" in missing.stderr
    trained = vqt(
        "train",
        "recipes/image_ae.yaml",
        "model.encoder.hidden=8",
        "model.decoder.hidden=8",
        "train.max_steps=2",
        "train.batch_size=8",
        "train.eval_batches=1",
        f"train.out_dir={tmp_path / 'ae'}",
    )
    assert trained.returncode == 0, trained.stderr
    picture = odd_sized_picture(tmp_path / "a.png")
    continuous = vqt("tokenize", str(picture), "--model", str(tmp_path / "ae"), "-o", "x.codes")
    assert continuous.returncode == 1 and "continuous and has no codes" in continuous.stderr
