"""Shared helpers: run the real `vqt` CLI in a subprocess, install real plugin packages with pip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_vqt(
    *args: str,
    pythonpath: list[Path] = (),
    env: dict | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
    prefix: list[str] = (),
) -> subprocess.CompletedProcess:
    """`python -m vqtoolkit ARGS` in a subprocess; `prefix` goes before it (e.g. a privilege wrapper)."""
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(p) for p in pythonpath] + [environment.get("PYTHONPATH", "")]
    )
    return no_internal_error(
        subprocess.run(
            [*prefix, sys.executable, "-m", "vqtoolkit", *args],
            capture_output=True,
            text=True,
            env=environment,
            cwd=cwd or ROOT,
            timeout=timeout,
        )
    )


def vqt(*args: str) -> subprocess.CompletedProcess:
    """The same `vqt` command line run in this process (click's runner): much faster than a subprocess."""
    from click.testing import CliRunner

    from vqtoolkit.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    completed = subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)
    return no_internal_error(completed)


def no_internal_error(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Fail the test on an exception that escaped a command (the CLI prints it as an internal error)."""
    assert "error: internal error:" not in result.stderr, result.stderr
    assert "Traceback (most recent call last)" not in result.stderr or "--debug" in result.args, result.stderr
    return result


def pip_install(package: Path, target: Path) -> Path:
    """Install a plugin package with pip into its own folder (no network, no change to the venv)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(package),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return target


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """Folders with each test plugin pip-installed: {'example': path, 'hooks_all': path, ...}."""
    cache: dict[str, Path] = {}

    def install(name: str) -> Path:
        if name not in cache:
            source = ROOT / "plugins" / "example" if name == "example" else ROOT / "tests" / "plugins" / name
            cache[name] = pip_install(source, tmp_path_factory.mktemp(name))
        return cache[name]

    return install


TINY_IMAGE = [
    "model.encoder.hidden=16",
    "model.decoder.hidden=16",
    "model.latent_dim=8",
    "train.batch_size=16",
    "train.max_steps=20",
    "train.log_every=5",
    "train.picture_every=0",
    "train.eval_batches=4",
]


TINY_SPEECH = [
    "model.encoder.hidden=8",
    "model.decoder.hidden=8",
    "model.encoder.max_channels=32",
    "model.decoder.max_channels=32",
    "model.latent_dim=16",
    "data.segment=2048",
    "train.batch_size=8",
    "train.max_steps=30",
    "train.log_every=1",
    "train.picture_every=0",
    "train.eval_batches=2",
    "optim.lr=0.003",
]


TINY_VIDEO = [
    "model.encoder.hidden=8",
    "model.decoder.hidden=8",
    "model.latent_dim=8",
    "data.frames=4",
    "data.size=[16,16]",
    "train.batch_size=2",
    "train.max_steps=6",
    "train.log_every=1",
    "train.picture_every=0",
    "train.eval_batches=1",
]
TINY = {
    "image": ("image_vqvae", TINY_IMAGE),
    "speech": ("speech_vqvae_paper", TINY_SPEECH),
    "video": ("video_vqvae", TINY_VIDEO),
}


def train_tiny(modality: str, run_dir: Path) -> Path:
    """Train the modality's VQ-VAE recipe at its tiny size through the CLI (32 codes)."""
    recipe, tiny = TINY[modality]
    result = run_vqt(
        "train", f"recipes/{recipe}.yaml", *tiny, "bottleneck.codebook_size=32", f"train.out_dir={run_dir}"
    )
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture(scope="session")
def tiny_image_run(tmp_path_factory) -> Path:
    """A small image VQ-VAE trained once on the shipped Fashion-MNIST sample."""
    return train_tiny("image", tmp_path_factory.mktemp("tiny_image") / "run")


@pytest.fixture(scope="session")
def tiny_speech_run(tmp_path_factory) -> Path:
    """A small speech VQ-VAE trained once on the shipped Asterisk prompts."""
    return train_tiny("speech", tmp_path_factory.mktemp("tiny_speech") / "run")


@pytest.fixture(scope="session")
def tiny_video_run(tmp_path_factory) -> Path:
    """A small video VQ-VAE trained once on the shipped Big Buck Bunny clip (modules may override it)."""
    return train_tiny("video", tmp_path_factory.mktemp("tiny_video") / "run")
