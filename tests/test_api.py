"""The Python API: its documented examples run, and `import vqtoolkit` stays cheap."""

import doctest
import re
import subprocess
import sys

from conftest import ROOT

import vqtoolkit
import vqtoolkit.api


def test_documented_examples_run(tiny_image_run, tiny_speech_run, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the examples use the shipped data and recipes by their repository paths
    results = doctest.testmod(
        vqtoolkit.api,
        extraglobs={"image_run": str(tiny_image_run), "speech_run": str(tiny_speech_run), "tmp": tmp_path},
        optionflags=doctest.ELLIPSIS,
        report=True,
    )
    assert results.failed == 0 and results.attempted > 20


def example_lines(text: str) -> list[str]:
    return [line.strip() for line in re.findall(r"^\s*(?:>>>|\.\.\.) .*$", text, re.MULTILINE)]


def test_docs_show_the_same_examples():
    documented = example_lines((ROOT / "docs/api.md").read_text())
    finder = doctest.DocTestFinder()
    tested = [line for test in finder.find(vqtoolkit.api) for line in example_lines(test.docstring or "")]
    assert sorted(documented) == sorted(tested)


def test_names():
    from vqtoolkit import (
        GaussianBottleneck,
        PixelCNN,
        Tokenizer,
        VectorQuantizer,
        decode,
        load_model,
        tokenize,
    )
    from vqtoolkit.inference.tokenizer import Tokenizer as tokenizer
    from vqtoolkit.nn.gaussian import GaussianBottleneck as gaussian
    from vqtoolkit.nn.pixelcnn import PixelCNN as pixelcnn
    from vqtoolkit.nn.quantize import VectorQuantizer as quantizer
    from vqtoolkit.rundir import load_model as loader

    assert (VectorQuantizer, GaussianBottleneck, PixelCNN, Tokenizer, load_model) == (
        quantizer, gaussian, pixelcnn, tokenizer, loader
    )  # fmt: skip
    assert tokenize is vqtoolkit.api.tokenize and decode is vqtoolkit.api.decode
    assert set(vqtoolkit.__all__) <= set(dir(vqtoolkit))
    try:
        vqtoolkit.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("unknown names must raise AttributeError")


def test_import_is_cheap():
    """`import vqtoolkit` (what `vqt --help` pays before any command) loads neither torch nor the API."""
    code = "import sys, vqtoolkit; print(sorted(m for m in ('torch', 'vqtoolkit.api') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == "[]\n"
