"""The docs site: the quickstarts' commands run as written, the plugin guide's test passes, every recipe
key is documented, and `mkdocs build --strict` passes."""

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from conftest import ROOT

DOCS = ROOT / "docs"
QUICKSTARTS = ["speech", "images", "video", "priors"]  # priors uses the VQ-VAE the images page trains
BIN = Path(sys.executable).parent  # the environment's `vqt` goes first on PATH
# The one change the test makes to the pages' commands: fewer steps. Every `train.max_steps=N` becomes 2
# training steps, followed by 1 evaluation batch at the end instead of the whole held-out split.
TINY_STEPS = "train.max_steps=2 train.eval_batches=1"


def marked_blocks(page: Path, marker: str, language: str) -> str:
    """The fenced blocks right after a `<!-- test: MARKER -->` line, in page order."""
    found = re.findall(
        rf"<!-- test: {marker} -->\s*\n```{language}[^\n]*\n(.*?)\n```", page.read_text(), re.S
    )
    assert found, f"{page}: no ```{language} block marked <!-- test: {marker} -->"
    return "\n".join(found)


def shrink(script: str) -> str:
    trains = len(re.findall(r"^vqt train ", script, re.M))
    script, shrunk = re.subn(r"\btrain\.max_steps=\d+", TINY_STEPS, script)
    assert shrunk == trains, "every `vqt train` on a quickstart page gives train.max_steps=N explicitly"
    return script


def environment(**extra: str) -> dict:
    # One thread per process: with models this small, a second thread saves little, and on a shared or
    # busy machine its spin-waiting costs several times the work itself.
    path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A folder that looks like a clone's root (the pages run from there); the runs land in it."""
    root = tmp_path_factory.mktemp("clone")
    for folder in ("recipes", "plugins", "docs"):
        (root / folder).symlink_to(ROOT / folder)
    assert (BIN / "vqt").is_file(), f"no vqt next to {sys.executable}"
    return root


def page(quickstart: str) -> Path:
    return DOCS / "quickstart" / f"{quickstart}.md"


def run_quickstart(name: str, cwd: Path) -> str:
    script = shrink(marked_blocks(page(name), "quickstart", "bash"))
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{name}:\n{script}\n{result.stderr[-3000:]}"
    return script


@pytest.mark.parametrize("name", QUICKSTARTS)
def test_quickstart_commands_run(name, clone):
    if name == "priors":  # the page's VQ-VAE is the images page's, trained by the same command
        vqvae = re.search(r"^vqt train recipes/image_vqvae\.yaml.*$", page("priors").read_text(), re.M)
        assert vqvae and vqvae.group(0) in marked_blocks(page("images"), "quickstart", "bash")
        if not (clone / "runs" / "image_vqvae" / "model.safetensors").is_file():
            run_quickstart("images", clone)
    script = run_quickstart(name, clone)
    outputs = re.findall(r"(?:-o|--output) (\S+)", script)
    assert outputs, f"{name}: the commands name what they write (-o), so the test can check it"
    for output in outputs:
        written = clone / output
        assert written.is_file() or any(written.glob("*")), f"{name}: {output} was not written"


def test_shrink_changes_only_step_counts():
    assert shrink("vqt train r.yaml train.max_steps=600 x=1\nvqt eval r") == (
        f"vqt train r.yaml {TINY_STEPS} x=1\nvqt eval r"
    )
    with pytest.raises(AssertionError):
        shrink("vqt train r.yaml")


def test_plugin_guide_test_passes(installed, clone, tmp_path):
    test_file = tmp_path / "test_vqt_example.py"
    test_file.write_text(marked_blocks(DOCS / "plugin-guide.md", "plugin-guide", "python") + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(test_file),
        ],
        cwd=clone,
        env=environment(PYTHONPATH=str(installed("example"))),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout


def load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    return hooks


def test_every_recipe_key_has_a_comment():
    """The recipe reference shows each field's comment in vqtoolkit/config.py: a new key needs one."""
    from vqtoolkit.config import Component, Recipe

    hooks, pending, seen = load_hooks(), [Recipe, Component], set()
    while pending:
        cls = pending.pop()
        seen.add(cls)
        docs = hooks.field_docs(cls)
        for f in dataclasses.fields(cls):
            assert docs.get(f.name), f"{cls.__name__}.{f.name} has no comment in vqtoolkit/config.py"
        hints = typing.get_type_hints(cls).values()
        pending += [h for h in hints if dataclasses.is_dataclass(h) and h not in seen]
    assert hooks.field_docs(Recipe)["tokenizer"].startswith("prior recipes")


def test_reference_pages_list_every_registered_component_and_command():
    from vqtoolkit.plugins import registries

    hooks = load_hooks()
    components, cli = hooks.components_page(), hooks.cli_page()
    for kind, registry in registries().items():
        for entry in registry:
            assert f"### `{entry.name}`" in components or f"| `{entry.name}` |" in components, (
                kind,
                entry.name,
            )
    assert "| `codebook_size` | int in [1, 16777216] | `512` | number of codes K. |" in components
    for command in ("train", "validate", "eval", "tokenize", "decode", "sample", "plugins"):
        assert f"## `vqt {command}`" in cli
    assert "| `--temperature` | FLOAT | `1.0` |" in cli


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
    reason="mkdocs-material is not installed (pip install -e '.[docs]'); .ci/run installs it and builds",
)
def test_mkdocs_build_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=environment(NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    for page in ("reference/recipe", "reference/components", "reference/cli", "quickstart/priors"):
        assert (tmp_path / "site" / page / "index.html").is_file(), page


LINK = re.compile(r"\]\(\s*<?([^)\s>]+)")  # a Markdown link's target
SNIPPET = re.compile(r'--8<--\s+"([^"]+)"')  # a snippet include, relative to the repository root
PATH_IN_TEXT = re.compile(r"(?<![\w.])((?:\.\./)+[\w./-]*|/(?:work|home|tmp|root|Users|opt)/[\w./-]+)")


def inside(path: Path) -> bool:
    return path == ROOT or ROOT in path.parents


def outside_the_repository(text: str, folder: Path) -> list[str]:
    """Every link, snippet include or path in `text` (a page in `folder`) that leads out of the repository."""
    found = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):  # a URL or an anchor
            continue
        path = target.split("#")[0]
        if not inside(Path(os.path.normpath(folder / path))):  # an absolute path replaces folder
            found.append(f"link {target}")
    found += [f"snippet {t}" for t in SNIPPET.findall(text) if not inside(Path(os.path.normpath(ROOT / t)))]
    found += [
        f"path {p}" for p in PATH_IN_TEXT.findall(text) if not inside(Path(os.path.normpath(folder / p)))
    ]
    return found


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))], ids=lambda p: str(p.relative_to(ROOT))
)
def test_docs_do_not_lead_outside_the_repository(page):
    assert outside_the_repository(page.read_text(), page.parent) == []


def test_the_check_finds_links_and_paths_that_leave_the_repository():
    text = (
        "[data](../../../shared/DATA.md), [ok](../training.md), [site](https://x.org) and /work/corpus/a.wav"
    )
    assert outside_the_repository(text, DOCS / "quickstart") == [
        "link ../../../shared/DATA.md",
        "path ../../../shared/DATA.md",
        "path /work/corpus/a.wav",
    ]
    assert outside_the_repository("[readme](../README.md) and ../docs/api.md", DOCS) == []
