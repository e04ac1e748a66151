"""The core's rooms: the run directory below both training and inference, which never import each other;
the CLI's tools added through a hook; no core module choosing media behaviour by a modality's name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

CORE = ROOT / "vqtoolkit"
BUILT_IN_MEDIA = {"image", "speech", "video"}


def imported(path: Path) -> set[str]:
    """Every vqtoolkit module a file imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("vqtoolkit")}


def modules(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.py"))


@pytest.mark.parametrize(
    "files, forbidden",
    [
        (modules(CORE / "inference"), "vqtoolkit.train"),
        (modules(CORE / "train"), "vqtoolkit.inference"),
        ([CORE / "rundir.py"], "vqtoolkit.train"),
        ([CORE / "rundir.py"], "vqtoolkit.inference"),
        ([CORE / "cli_tools.py"], "vqtoolkit.cli"),
        ([CORE / "cli.py"], "vqtoolkit.cli_tools"),
    ],
    ids=["inference", "training", "rundir-training", "rundir-inference", "cli_tools", "cli"],
)
def test_rooms_do_not_import_each_other(files, forbidden):
    crossing = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in imported(path)
        if name == forbidden or name.startswith(f"{forbidden}.")
    }
    assert not crossing


def test_no_core_module_compares_with_a_built_in_modality_name():
    """Media behaviour comes from the Modality's fields: the core never tests for "image" and the like."""
    found = []
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            constants = []
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                collections = [n for n in operands if isinstance(n, (ast.Tuple, ast.List, ast.Set))]
                operands += [element for n in collections for element in n.elts]
                constants = [n for n in operands if isinstance(n, ast.Constant)]
            elif isinstance(node, ast.Dict):
                constants = [key for key in node.keys if isinstance(key, ast.Constant)]
            found += [f"{path.relative_to(ROOT)}:{c.lineno}" for c in constants if c.value in BUILT_IN_MEDIA]
    assert not found
