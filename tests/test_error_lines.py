"""Every error is one line naming the user's path; a bug that escapes a command says it is one."""

import errno

import pytest
from click.testing import CliRunner
from conftest import ROOT, vqt
from vqt_image.dataset import image_dataset
from vqt_image.io import write_image

from vqtoolkit.cli import cli

pytestmark = pytest.mark.hostile("error lines")


@pytest.mark.parametrize("command", ["tokenize", "decode", "info", "validate", "eval"])
def test_a_file_name_with_a_newline_cannot_split_or_forge_a_line(tmp_path, command):
    forged = tmp_path / "a\nerror: forged.png"
    forged.write_bytes(b"not media, codes, or a recipe")
    arguments = {
        "tokenize": [forged, "--model", "speech", "-o", tmp_path / "x.codes"],
        "decode": [forged, "--model", "speech", "-o", tmp_path / "x.wav"],
        "info": [forged],
        "validate": [forged],
        "eval": [forged],
    }[command]
    result = vqt(command, *arguments)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.count("error:") == 2  # the second one escaped
    assert "a\\nerror: forged.png" in result.stderr


def test_an_escaping_exception_is_one_line_that_says_it_is_a_bug(monkeypatch):
    import vqtoolkit.config

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(vqtoolkit.config, "load_recipe", broken)
    result = CliRunner().invoke(cli, ["validate", str(ROOT / "recipes/image_vqvae.yaml")])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: internal error: ZeroDivisionError: division by zero "
        "(a bug in vqt; rerun with --debug for the traceback)\n"
    )
    debug = CliRunner().invoke(cli, ["--debug", "validate", str(ROOT / "recipes/image_vqvae.yaml")])
    assert isinstance(debug.exception, ZeroDivisionError)


def test_a_full_disk_names_the_users_file_not_a_temporary_one(tiny_image_run, tmp_path, monkeypatch):
    from pathlib import Path

    picture = tmp_path / "in.png"
    write_image(picture, image_dataset("", "test", 1)[0])
    target = tmp_path / "out.codes"

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    result = vqt("tokenize", picture, "--model", tiny_image_run, "-o", target)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {target}: cannot write it (No space left on device)"
    assert list(tmp_path.glob(".*tmp")) == [] and not target.exists()
