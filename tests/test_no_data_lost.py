"""Nothing a command writes destroys what the user had: inputs, earlier pictures, earlier runs."""

import errno
import json
from pathlib import Path

import pytest
from conftest import ROOT, TINY, vqt
from PIL import Image
from vqt_image.dataset import image_dataset
from vqt_image.io import read_image, write_image

from vqtoolkit.errors import VQTError

pytestmark = pytest.mark.hostile("nothing lost")


@pytest.mark.parametrize("command", ["decode", "tokenize"])
def test_an_output_never_replaces_its_input(tiny_image_run, tmp_path, command):
    picture = tmp_path / "shirt.png"
    write_image(picture, image_dataset("", "test", 1)[0])
    codes = tmp_path / "shirt.codes"
    assert vqt("tokenize", picture, "--model", tiny_image_run, "-o", codes).returncode == 0
    source = codes if command == "decode" else picture
    before = source.read_bytes()
    result = vqt(command, source, "--model", tiny_image_run, "-o", source)
    assert result.returncode == 1
    problem = {
        "decode": f"is the input {source}; choose another output path",
        "tokenize": "is a file, not a folder; give -o a folder or a name ending in .codes",
    }[command]
    assert result.stderr.strip() == f"error: {source}: {problem}"
    assert source.read_bytes() == before


def test_a_failed_codes_write_keeps_the_old_codes_whole(tiny_image_run, tmp_path, monkeypatch):
    pictures = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, image in zip(pictures, image_dataset("", "test", 1)):
        write_image(path, image)
    target = tmp_path / "out.codes"
    assert vqt("tokenize", pictures[0], "--model", tiny_image_run, "-o", target).returncode == 0
    before = target.read_bytes()

    def full_disk(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])  # part of the new file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    result = vqt("tokenize", pictures[1], "--model", tiny_image_run, "-o", target)
    monkeypatch.undo()
    assert result.returncode == 1 and f"error: {target}: cannot write it" in result.stderr
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "a.png",
        "b.png",
        "out.codes",
    ]
    assert vqt("decode", target, "--model", tiny_image_run, "-o", tmp_path / "back.png").returncode == 0


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


def test_training_into_a_folder_of_other_files_refuses_unless_overwrite(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"the user's own file")
    quick = [*TINY["image"][1], "train.max_steps=2", f"train.out_dir={folder}"]
    refused = vqt("train", ROOT / "recipes/image_vqvae.yaml", *quick)
    assert refused.returncode == 1 and refused.stderr.startswith(f"error: {folder}: holds other files")
    assert [p.name for p in folder.iterdir()] == ["holiday.jpg"]
    forced = vqt("train", "--overwrite", ROOT / "recipes/image_vqvae.yaml", *quick)
    assert forced.returncode == 0 and (folder / "holiday.jpg").read_bytes() == b"the user's own file"


def test_several_inputs_and_one_codes_file_are_refused_before_writing(tiny_image_run, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for index, image in zip(range(2), image_dataset("", "test", 1)):
        write_image(folder / f"{index}.png", image)
    result = vqt("tokenize", folder, "--model", tiny_image_run, "-o", tmp_path / "all.codes")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {tmp_path / 'all.codes'}: 2 inputs write one codes file each; give -o a folder"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pictures"]


def test_temporary_files_left_by_a_killed_process_are_ignored(tiny_image_run, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    write_image(folder / "shirt.png", image_dataset("", "test", 1)[0])
    (folder / ".shirt.png.4242.tmp").write_bytes((folder / "shirt.png").read_bytes()[:40])  # a killed write
    (folder / ".coat.png.x1y2.tmp").write_bytes(b"\x89PNG")
    result = vqt("tokenize", folder, "--model", tiny_image_run, "-o", tmp_path / "codes")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "codes").iterdir()) == ["shirt.codes"]
