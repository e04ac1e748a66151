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
) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(p) for p in pythonpath] + [environment.get("PYTHONPATH", "")]
    )
    return subprocess.run(
        [sys.executable, "-m", "vqtoolkit", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd or ROOT,
        timeout=timeout,
    )


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
