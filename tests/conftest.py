"""Shared helpers: run the real `vqt` CLI in a subprocess, install real plugin packages with pip.

Tests marked `hostile("class")` are the bad-input matrix. With VQT_CASE_FIGURES=FILE set, each of them
appends one JSON line to FILE: its class, whether it held, whether a traceback escaped, and its peak memory
(the largest `vqt` subprocess it ran, and how far the test process itself grew); benchmarks/hostile_inputs.py
runs them and prints the table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from vqtoolkit.memory import peak_kib, restart_peak

ROOT = Path(__file__).resolve().parent.parent
FIGURES = os.environ.get("VQT_CASE_FIGURES")
CHILD_PEAKS_KIB: list[int] = []  # the peak resident memory of each `vqt` subprocess of the running test


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
    command = [*prefix, sys.executable, "-m", "vqtoolkit", *args]
    return no_internal_error(run_measured(command, environment, cwd or ROOT, timeout))


def run_measured(command: list[str], env: dict, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run with captured text output, reaped with wait4 to learn the child's peak memory."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=cwd)  # fmt: skip
    output: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda name, pipe: output.__setitem__(name, pipe.read()), args=item)
        for item in (("stdout", process.stdout), ("stderr", process.stderr))
    ]
    killed = threading.Event()
    timer = threading.Timer(timeout, lambda: (killed.set(), process.kill()))
    for thread in (*readers, timer):
        thread.start()
    _, status, usage = os.wait4(process.pid, 0)
    timer.cancel()
    for reader in readers:
        reader.join()
    process.stdout.close()
    process.stderr.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    if killed.is_set():
        raise subprocess.TimeoutExpired(command, timeout, output["stdout"], output["stderr"])
    CHILD_PEAKS_KIB.append(usage.ru_maxrss)
    return subprocess.CompletedProcess(command, process.returncode, output["stdout"], output["stderr"])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    if FIGURES and item.get_closest_marker("hostile"):
        CHILD_PEAKS_KIB.clear()
        item.start_kib = restart_peak()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    marker = item.get_closest_marker("hostile")
    if not (FIGURES and marker and report.when == "call") or report.skipped:
        return
    error = call.excinfo  # an exception other than a failed assertion escaped the code under test
    failed_check = error is not None and error.errisinstance((AssertionError, pytest.fail.Exception))
    escaped = error is not None and (error.errisinstance(EscapedException) or not failed_check)
    record = {
        "case": item.nodeid,
        "class": marker.args[0],
        "held": report.passed,
        "traceback": escaped,
        "peak_process_mib": max(CHILD_PEAKS_KIB, default=0) / 1024,
        "growth_mib": (peak_kib() - getattr(item, "start_kib", 0)) / 1024,
        "seconds": report.duration,
    }
    with open(FIGURES, "a") as figures:
        figures.write(json.dumps(record) + "\n")


def vqt(*args: str) -> subprocess.CompletedProcess:
    """The same `vqt` command line run in this process (click's runner): much faster than a subprocess."""
    from click.testing import CliRunner

    from vqtoolkit.cli import cli
    from vqtoolkit.plugins import register_commands

    if "report" not in cli.commands:  # the plugins' commands, as `vqt` itself adds them
        register_commands(cli)
    # `vqt --threads N` exports VQT_THREADS for its worker processes; the runner puts it back afterwards, so
    # that it does not reach the subprocesses of later tests (it outranks their OMP_NUM_THREADS)
    result = CliRunner().invoke(
        cli, [str(a) for a in args], env={"VQT_THREADS": os.environ.get("VQT_THREADS")}
    )
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    completed = subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)
    return no_internal_error(completed)


class EscapedException(AssertionError):
    """A command let an exception escape: its internal-error line, or a Python traceback."""


def no_internal_error(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Fail the test on an exception that escaped a command (the CLI prints it as an internal error)."""
    traceback = "Traceback (most recent call last)" in result.stderr and "--debug" not in result.args
    if "error: internal error:" in result.stderr or traceback:
        raise EscapedException(result.stderr)
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
    """A small video VQ-VAE trained once on the shipped video sample (modules may override it)."""
    return train_tiny("video", tmp_path_factory.mktemp("tiny_video") / "run")
