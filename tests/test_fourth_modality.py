"""A fourth modality from a pip-installed plugin (tests/plugins/vqt_series: time series in CSV files) gets
every command through the real CLI, with no change to the toolkit: train, eval (with a metric the recipe
adds), tokenize, decode, info, report, export, a prior over its codes, and samples from that prior."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_vqt
from vqt_speech.io import read_audio

PROMPTS = ROOT / "plugins/vqt_speech/data/asterisk_small"


def envelope_csvs(folder: Path, count: int = 5) -> list[Path]:
    """Real time series: the log energy, every 10 ms, of shipped Asterisk prompts, scaled into [0, 1]."""
    folder.mkdir()
    paths = []
    for prompt in sorted(PROMPTS.glob("*.g722"))[:count]:
        audio, _ = read_audio(prompt)
        frames = audio[0, : audio.shape[1] // 160 * 160].reshape(-1, 160)
        energy = ((frames.pow(2).mean(1) + 1e-6).log10() + 6) / 6
        path = folder / f"{prompt.stem}.csv"
        with open(path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["energy"])
            writer.writerows([[f"{v:.6f}"] for v in energy.clamp(0, 1).tolist()])
        paths.append(path)
    return paths


def rows(path: Path) -> list[float]:
    with open(path, newline="") as file:
        return [float(row[0]) for row in list(csv.reader(file))[1:]]


@pytest.fixture(scope="module")
def series(installed, tmp_path_factory):
    folder = tmp_path_factory.mktemp("series")
    files = envelope_csvs(folder / "data")
    recipe = {
        "data": {"modality": "series", "path": str(folder / "data"), "channels": 1, "segment": 64},
        "model": {
            "encoder": {"name": "conv", "downsample": [4], "hidden": 16},
            "decoder": {"name": "conv", "downsample": [4], "hidden": 16},
            "latent_dim": 8,
        },
        "bottleneck": {"name": "vq", "codebook_size": 16},
        "eval": {"metrics": ["max_error"]},
        "optim": {"lr": 0.003},
        "train": {"max_steps": 40, "batch_size": 8, "log_every": 10, "picture_every": 0,
                  "out_dir": str(folder / "run")},
    }  # fmt: skip
    path = folder / "series.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return {"folder": folder, "files": files, "recipe": path, "plugin": installed("vqt_series")}


def cli(series, *args):
    result = run_vqt(*map(str, args), pythonpath=[series["plugin"]])
    assert result.returncode == 0, result.stderr
    return result


def test_a_fourth_modality_gets_every_command(series, tmp_path):
    folder, run = series["folder"], series["folder"] / "run"
    assert "series" in cli(series, "plugins").stdout
    cli(series, "validate", series["recipe"])
    trained = json.loads(cli(series, "train", series["recipe"]).stdout)
    assert trained["step"] == 40 and 0 <= trained["max_error"] <= 1  # the recipe's eval.metrics
    evaluated = json.loads(cli(series, "eval", run).stdout)
    assert evaluated["max_error"] == pytest.approx(trained["max_error"])

    source = series["files"][-1]  # held out
    codes, back = tmp_path / "held_out.codes", tmp_path / "back.csv"
    cli(series, "tokenize", source, "--model", run, "-o", codes)
    described = json.loads(cli(series, "info", codes, "--json").stdout)
    assert described["modality"] == "series" and described["grid"] == [-(-len(rows(source)) // 4)]
    cli(series, "decode", codes, "--model", run, "-o", back)
    original, decoded = rows(source), rows(back)
    assert len(decoded) == len(original)
    error = sum(abs(a - b) for a, b in zip(original, decoded)) / len(original)
    spread = sum(abs(a - sum(original) / len(original)) for a in original) / len(original)
    assert error < spread  # closer to the series than its mean is

    cli(series, "report", run, "-o", tmp_path / "report")
    assert (tmp_path / "report" / "series.png").is_file()
    assert "series.png" in (tmp_path / "report" / "report.md").read_text()
    cli(series, "export", run, "-o", tmp_path / "export")
    exported = json.loads((tmp_path / "export" / "export.json").read_text())
    assert exported["encoder"]["example_shape"] == [2, 1, 64]

    prior = folder / "prior"
    cli(series, "train", ROOT / "recipes/image_prior.yaml", f"tokenizer={run}", "data.path=",
        f"train.out_dir={prior}", "train.max_steps=5", "train.batch_size=8", "prior.hidden=16",
        "prior.layers=2")  # fmt: skip
    cli(series, "sample", "--model", run, "--prior", prior, "-n", 3, "-o", tmp_path / "samples")
    samples = sorted((tmp_path / "samples").glob("sample_*.csv"))
    assert len(samples) == 3 and all(len(rows(path)) == 64 for path in samples)
    cli(series, "report", prior, "-o", tmp_path / "prior_report")
    assert (tmp_path / "prior_report" / "samples.png").is_file()


def test_the_plugin_guide_shows_this_plugins_own_code():
    guide = (ROOT / "docs/plugins.md").read_text().split("## A new modality, end to end")[1]
    shown = guide.split("```python\n")[1].split("```")[0]
    assert shown.strip() in (ROOT / "tests/plugins/vqt_series/vqt_series/__init__.py").read_text()
