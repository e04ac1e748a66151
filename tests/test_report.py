"""`vqt report`: pictures and a Markdown summary of real trained runs, drawn with matplotlib."""

import json
import re

import numpy as np
import pytest
import torch
from conftest import ROOT, run_vqt, vqt
from PIL import Image

from vqtoolkit.report import MATPLOTLIB_MISSING, code_counts
from vqtoolkit.rundir import METRICS_FILE, load_model, read_metrics
from vqtoolkit.train.data import eval_loader, make_dataset


def picture_size(path):
    with Image.open(path) as image:
        image.verify()  # a whole, valid PNG
    with Image.open(path) as image:
        return image.size


def test_image_run_report(tiny_image_run, tmp_path):
    result = vqt("report", tiny_image_run, "-o", tmp_path / "report", "--batches", "2")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "report"
    names = ("reconstructions.png", "codebook_usage.png", "training_curves.png")
    for name in names:
        width, height = picture_size(out / name)
        assert 200 < width < 1600 and 150 < height < 1200, (name, width, height)
        assert (out / name).stat().st_size < 200_000  # small enough for the docs
    text = (out / "report.md").read_text()
    assert all(f"]({name})" in text for name in names)  # every picture embedded
    final = [r for r in read_metrics(tiny_image_run / METRICS_FILE) if r["split"] == "eval"][-1]
    assert f"| psnr | {final['psnr']:.4g} |" in text and "| codebook_perplexity |" in text
    assert "- **steps trained**: 20" in text and "- **downsampling**: 4 x 4" in text
    bottleneck = next(line for line in text.splitlines() if line.startswith("- **bottleneck**"))
    assert "decay=0.99" in bottleneck and "trained at decay=0.8 (fitted to the run's 20 steps)" in bottleneck
    assert "codebook_size: 32" in text  # the recipe itself, at the end


def test_usage_counts_cover_every_held_out_code(tiny_image_run):
    from vqtoolkit.plugins import registry

    model, recipe = load_model(tiny_image_run)
    dataset = make_dataset(recipe, registry("modalities").get("image"), "test")
    (counts,) = code_counts(model, eval_loader(dataset, 100), "cpu", batches=2)
    codes = model.encode(torch.stack([dataset[i] for i in range(200)]))
    assert counts.sum() == 200 * 7 * 7
    assert torch.equal(counts, torch.bincount(codes.flatten(), minlength=32))


def test_speech_run_report_has_waveforms_and_spectrograms(tiny_speech_run, tmp_path):
    assert vqt("report", tiny_speech_run, "-o", tmp_path, "--batches", "1").returncode == 0
    width, height = picture_size(tmp_path / "speech.png")
    assert width > 600 and height > 300  # 2 clips x (original, reconstruction) rows, 2 columns
    text = (tmp_path / "report.md").read_text()
    assert "![reconstructions](speech.png)" in text and "| si_snr |" in text
    assert (tmp_path / "codebook_usage.png").is_file() and (tmp_path / "training_curves.png").is_file()


def test_prior_run_report_shows_decoded_samples(tiny_image_run, tmp_path):
    from vqt_image.dataset import image_dataset

    pictures = torch.stack([image_dataset("", "test", 1)[i] for i in range(160)])  # real ones, few: fast
    np.savez(tmp_path / "few.npz", images=pictures.numpy())
    prior = tmp_path / "prior"
    trained = vqt(
        "train", ROOT / "recipes/image_prior.yaml", f"tokenizer={tiny_image_run}", f"train.out_dir={prior}",
        f"data.path={tmp_path / 'few.npz'}", "prior.hidden=16", "prior.layers=2", "train.batch_size=16",
        "train.max_steps=6", "train.log_every=2",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert vqt("report", prior, "--samples", "8").returncode == 0
    out = prior / "report"
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "samples.png", "training_curves.png"]
    text = (out / "report.md").read_text()
    assert f"`{tiny_image_run}`" in text and "| bits_per_code |" in text
    eval_record = json.loads((prior / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"| bits_per_code | {eval_record['bits_per_code']:.4g} |" in text
    # `vqt info` on the same prior run (trained here once for both)
    described = json.loads(vqt("info", prior, "--json").stdout)
    assert described["kind"] == "prior (pixelcnn)" and described["modality"] == "image"
    assert described["code_grid"] == [7, 7] and described["codebook_sizes"] == [32]
    assert described["steps_trained"] == 6 and described["final_metrics"]["examples"] == 16


def test_without_matplotlib_one_line_error(tiny_image_run, tmp_path):
    blocker = tmp_path / "blocker" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    result = run_vqt("report", str(tiny_image_run), pythonpath=[blocker.parent])
    assert result.returncode == 1
    assert result.stderr == f"error: {MATPLOTLIB_MISSING}\n"
    assert MATPLOTLIB_MISSING == "vqt report needs matplotlib: pip install 'vqtoolkit[report]'"


def test_not_a_run_directory(tmp_path):
    result = vqt("report", tmp_path)
    assert result.returncode == 1 and re.fullmatch(r"error: .*not a vqt run directory.*\n", result.stderr)


@pytest.mark.parametrize("count", [1, 2])
def test_video_frame_strips_from_the_shipped_clip(tmp_path, count):
    """The rank-3 picture: one row of frames per clip and one per reconstruction, real frames."""
    from vqt_video.dataset import video_dataset

    from vqtoolkit.report import frame_strips

    clips = torch.stack([video_dataset("", "test", 3, frames=4, size=[32, 32])[i] for i in range(count)])
    noisy = (clips + 0.1 * torch.randn_like(clips)).clamp(0, 1)
    width, height = picture_size(frame_strips(clips, noisy, tmp_path / "frames.png", frames=4))
    assert height > 1.5 * count * width / 4  # 2 * count rows of 4 square frames, with titles
