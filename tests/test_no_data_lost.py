"""Nothing a command writes destroys what the user had: inputs, earlier pictures, earlier runs."""

import json

import pytest
from conftest import ROOT, TINY, vqt
from PIL import Image
from vqt_image.dataset import image_dataset
from vqt_image.io import read_image, write_image

from vqtoolkit.errors import VQTError


def test_decode_refuses_to_write_over_its_codes_file(tiny_image_run, tmp_path):
    picture = tmp_path / "shirt.png"
    write_image(picture, image_dataset("", "test", 1)[0])
    codes = tmp_path / "shirt.codes"
    assert vqt("tokenize", picture, "--model", tiny_image_run, "-o", codes).returncode == 0
    before = codes.read_bytes()
    result = vqt("decode", codes, "--model", tiny_image_run, "-o", codes)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {codes}: is the input {codes}; choose another output path"
    assert codes.read_bytes() == before


def test_a_failed_picture_write_keeps_the_old_picture_whole(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    images = image_dataset("", "test", 1)
    first, second = images[0], images[1]
    write_image(path, first)
    before = path.read_bytes()

    def full_disk(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(before[:50])  # a header that reads as a PNG, then nothing
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(VQTError, match="No space left on device"):
        write_image(path, second)
    assert path.read_bytes() == before and read_image(path)[0].shape == first.shape
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary file left behind


def test_training_into_a_run_directory_refuses_unless_resume_or_overwrite(tmp_path):
    run = tmp_path / "run"
    quick = [*TINY["image"][1], "train.max_steps=2", f"train.out_dir={run}"]
    assert vqt("train", ROOT / "recipes/image_vqvae.yaml", *quick).returncode == 0
    config, metrics = (run / "config.yaml").read_text(), (run / "metrics.jsonl").read_text()
    again = vqt("train", ROOT / "recipes/image_vqvae.yaml", *quick, "model.latent_dim=8")
    assert again.returncode == 1 and again.stderr.startswith(f"error: {run}: holds a run already")
    assert (run / "config.yaml").read_text() == config and (run / "metrics.jsonl").read_text() == metrics
    resumed = vqt("train", "--resume", run, "train.max_steps=3")
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["step"] == 3
    fresh = vqt("train", "--overwrite", ROOT / "recipes/image_vqvae.yaml", *quick)
    assert fresh.returncode == 0 and json.loads(fresh.stdout)["step"] == 2


def test_temporary_files_left_by_a_killed_process_are_ignored(tiny_image_run, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    write_image(folder / "shirt.png", image_dataset("", "test", 1)[0])
    (folder / ".shirt.png.4242.tmp").write_bytes((folder / "shirt.png").read_bytes()[:40])  # a killed write
    (folder / ".coat.png.x1y2.tmp").write_bytes(b"\x89PNG")
    result = vqt("tokenize", folder, "--model", tiny_image_run, "-o", tmp_path / "codes")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "codes").iterdir()) == ["shirt.codes"]
