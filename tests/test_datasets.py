"""Code datasets: `vqt tokenize DIR --dataset OUT` on the shipped prompts, resumed after a SIGKILL, split over
two processes (gloo), read back by CodesDataset, by Hugging Face `datasets` and by the prior trainer."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_vqt, vqt

from vqtoolkit.data import INDEX, MANIFEST, REPORT, CodesDataset, shard_name
from vqtoolkit.errors import VQTError
from vqtoolkit.inference.codes import read_codes

PROMPTS = ROOT / "plugins" / "vqt_speech" / "data" / "asterisk_small"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The shipped prompts in two folders, and one file that is not audio at all."""
    folder = tmp_path_factory.mktemp("corpus") / "speech"
    for name, files in (
        ("a", sorted(PROMPTS.glob("*.g722"))[:20]),
        ("b", sorted(PROMPTS.glob("*.g722"))[20:40]),
    ):
        (folder / name).mkdir(parents=True)
        for file in files:
            shutil.copy(file, folder / name / file.name)
    (folder / "b" / "zz-broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt this is not audio")
    return folder


@pytest.fixture(scope="module")
def dataset(corpus, tiny_speech_run, tmp_path_factory) -> Path:
    """One uninterrupted run of one process with one thread: the reference the other runs must equal."""
    out = tmp_path_factory.mktemp("reference") / "codes"
    result = run_vqt("--threads", "1", "tokenize", corpus, "--model", tiny_speech_run, "--dataset", out,
                     "--shard-files", "4")  # fmt: skip
    assert result.returncode == 1, result.stderr  # the broken file: listed, skipped, and said at the end
    assert f"1 of 41 inputs could not be tokenized (listed in {out / REPORT})" in result.stderr
    return out


def same_dataset(one: Path, other: Path) -> None:
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in other.iterdir())
    for name in names:
        assert (one / name).read_bytes() == (other / name).read_bytes(), name


def test_dataset_holds_every_readable_file_with_the_codes_vqt_tokenize_writes(
    corpus, dataset, tiny_speech_run, tmp_path
):
    manifest = json.loads((dataset / MANIFEST).read_text())
    assert manifest["files"] == 41 and manifest["shards"] == 11 and manifest["codebook_sizes"] == [32]
    report = json.loads((dataset / REPORT).read_text())
    assert report["tokenized"] == 40 and [s["path"] for s in report["skipped"]] == [
        str(corpus / "b" / "zz-broken.wav")
    ]
    codes = CodesDataset(dataset)
    assert len(codes) == codes.items == 40
    for i in (0, 17, 39):
        info = codes.info(i)
        single = tmp_path / f"{i}.codes"
        assert vqt("tokenize", info["path"], "--model", tiny_speech_run, "-o", single).returncode == 0
        expected, meta = read_codes(single)
        assert torch.equal(codes[i], expected.long())
        assert info["grid"] == meta.latent_grid and info["model_hash"] == manifest["model_hash"]
        assert info["duration_s"] == pytest.approx(meta.original_shape[0] / 16000)
        assert codes.meta(i)["original_shape"] == meta.original_shape


def test_windows_cover_each_item_in_fixed_lengths(dataset):
    whole = CodesDataset(dataset)
    windows = CodesDataset(dataset, window=64, stride=32)
    lengths = [whole.info(i)["grid"][0] for i in range(whole.items)]
    assert len(windows) == sum(max(0, (n - 64) // 32 + 1) for n in lengths) > 0
    item = next(i for i, n in enumerate(lengths) if n >= 96)
    first = sum(max(0, (n - 64) // 32 + 1) for n in lengths[:item])
    assert torch.equal(windows[first + 1], whole[item][32:96])
    assert all(windows[i].shape == (64,) for i in range(0, len(windows), 7))


def test_a_killed_run_resumes_to_the_same_dataset(corpus, dataset, tiny_speech_run, tmp_path):
    out = tmp_path / "codes"
    command = [sys.executable, "-m", "vqtoolkit", "--threads", "1", "tokenize", str(corpus), "--model",
               str(tiny_speech_run), "--dataset", str(out), "--shard-files", "4"]  # fmt: skip
    worker = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / shard_name(1)).exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.arrow")}
    assert written and not (out / INDEX).exists(), "the kill came too late to interrupt the run"
    resumed = run_vqt(*command[3:])
    assert resumed.returncode == 1 and "1 of 41 inputs" in resumed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.arrow") if p.name in written} == written
    same_dataset(dataset, out)


def test_two_processes_make_the_same_dataset_as_one(corpus, dataset, tiny_speech_run, tmp_path):
    out = tmp_path / "codes"
    result = run_vqt("tokenize", corpus, "--model", tiny_speech_run, "--dataset", out, "--shard-files", "4",
                     "--nproc", "2")  # fmt: skip
    assert result.returncode == 1 and result.stderr.count("could not be tokenized") == 1, result.stderr
    same_dataset(dataset, out)


def test_hugging_face_datasets_reads_the_same_arrays(dataset):
    hf = pytest.importorskip("datasets")
    codes = CodesDataset(dataset)
    shards = sorted(str(p) for p in dataset.glob("shard-*.arrow"))
    table = hf.load_dataset("arrow", data_files=shards, split="train").with_format("numpy")
    assert len(table) == codes.items
    for i in range(codes.items):
        assert table[i]["path"] == codes.info(i)["path"]
        assert np.array_equal(table[i]["codes"].reshape(table[i]["shape"]), codes[i].numpy())


def test_a_prior_trains_on_a_code_dataset(dataset, tiny_speech_run, tmp_path):
    recipe = ["recipes/speech_prior.yaml", f"tokenizer={tiny_speech_run}", f"data.codes={dataset}"]
    result = run_vqt("train", *recipe, "data.codes_window=64", "train.max_steps=3", "train.batch_size=8",
                     "prior.hidden=16", "prior.layers=2", f"train.out_dir={tmp_path / 'prior'}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "bits_per_code" in result.stdout


def test_a_dataset_of_another_model_is_refused_by_the_prior(dataset, tiny_image_run, tmp_path):
    recipe = ["recipes/image_prior.yaml", f"tokenizer={tiny_image_run}", f"data.codes={dataset}"]
    result = run_vqt("train", *recipe, f"train.out_dir={tmp_path / 'prior'}")
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"error: data.codes: {dataset} holds the codes of another model than tokenizer {tiny_image_run}"
    )


def test_rerun_with_other_options_or_into_a_foreign_folder_is_one_line(
    corpus, dataset, tiny_speech_run, tmp_path
):
    other = vqt("tokenize", corpus, "--model", tiny_speech_run, "--dataset", dataset, "--shard-files", "8")
    assert other.returncode == 1
    assert other.stderr.strip().startswith(f"error: {dataset}: holds a code dataset of other options")
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    refused = vqt("tokenize", corpus, "--model", tiny_speech_run, "--dataset", foreign)
    assert refused.returncode == 1 and (foreign / "todo.txt").read_text() == "mine"
    assert (
        refused.stderr.strip()
        == f"error: {foreign}: exists and is not a code dataset; give an empty or new folder"
    )
    both = vqt("tokenize", corpus, "--model", tiny_speech_run, "--dataset", foreign, "-o", tmp_path / "x")
    assert both.returncode == 2 and "--dataset writes one dataset" in both.stderr


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: (d / INDEX).write_bytes((d / INDEX).read_bytes()[:300]),
            "not a readable code dataset file",
        ),
        (lambda d: (d / MANIFEST).write_text("[1, 2]"), "not a JSON object"),
        (
            lambda d: (d / MANIFEST).write_text(
                json.dumps(
                    {"format": "vqtoolkit.codes-dataset", "version": 1, "codebook_sizes": [32], "shards": 99}
                )
            ),
            "shard-00011.arrow: not a readable code dataset file",
        ),  # fmt: skip
        (lambda d: (d / shard_name(3)).unlink(), "shard-00003.arrow: not a readable code dataset file"),
        (lambda d: shutil.copy(d / shard_name(10), d / shard_name(1)), "points at shard 1 row 0, not there"),
        (
            lambda d: shutil.copy(d / shard_name(0), d / shard_name(1)),
            "item 4 is .* in the index but .* in shard 1",
        ),
    ],
    ids=[
        "truncated-index",
        "manifest-not-object",
        "more-shards-than-there",
        "missing-shard",
        "short-shard",
        "swapped-shard",
    ],
)
def test_a_damaged_dataset_is_one_error_naming_its_file(dataset, tmp_path, damage, message):
    copy = tmp_path / "codes"
    shutil.copytree(dataset, copy)
    damage(copy)
    with pytest.raises(VQTError, match=message):
        CodesDataset(copy)


def test_vqt_info_describes_a_dataset(dataset):
    described = json.loads(vqt("info", dataset, "--json").stdout)
    assert (described["kind"], described["items"], described["skipped_files"]) == ("code dataset", 40, 1)
    assert described["codes"] == sum(CodesDataset(dataset).info(i)["length"] for i in range(40))


def test_a_folder_refused_under_two_processes_is_one_line_and_no_hang(corpus, tiny_speech_run, tmp_path):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    result = run_vqt("tokenize", corpus, "--model", tiny_speech_run, "--dataset", foreign, "--nproc", "2")
    assert result.returncode == 1 and (foreign / "todo.txt").read_text() == "mine"
    refusal = f"error: {foreign}: exists and is not a code dataset; give an empty or new folder"
    assert result.stderr.strip() == refusal
