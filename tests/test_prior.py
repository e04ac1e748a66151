"""PixelCNN priors through the CLI: train on a VQ-VAE's codes, evaluate, sample new media."""

import json

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_VIDEO, run_vqt, vqt
from PIL import Image
from vqt_speech.io import read_audio
from vqt_video.io import video_info

from vqtoolkit.rundir import load_tensors

TINY_PRIOR = [
    "prior.hidden=16",
    "prior.layers=3",
    "train.batch_size=16",
    "train.max_steps=15",
    "train.log_every=5",
]


def train_prior(kind: str, tokenizer, out, *extra):
    overrides = [f"tokenizer={tokenizer}", f"train.out_dir={out}", *TINY_PRIOR, *extra]
    result = vqt("train", ROOT / "recipes" / f"{kind}_prior.yaml", *overrides)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def image_prior(tiny_image_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("image_prior") / "run"
    return out, train_prior("image", tiny_image_run, out)


def test_image_prior_trains_and_reports_bits(image_prior):
    run, results = image_prior
    assert 0 < results["bits_per_code"] < 5 + 0.1  # K = 32 codes: a uniform prior is 5 bits per code
    assert results["bits_per_dim"] == pytest.approx(
        results["prior_bits_per_dim"] + results["recon_bits_per_dim"]
    )
    assert results["examples"] == 1000
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["split"] == "eval" and (run / "codes_train.safetensors").is_file()
    evaluated = vqt("eval", run)
    assert evaluated.returncode == 0
    assert json.loads(evaluated.stdout)["bits_per_code"] == pytest.approx(results["bits_per_code"])


def test_sample_writes_images_and_a_grid(tiny_image_run, image_prior, tmp_path):
    run, _ = image_prior
    result = vqt(
        "sample", "--model", tiny_image_run, "--prior", run, "-n", 5, "-o", tmp_path / "s", "--seed", 3
    )
    assert result.returncode == 0, result.stderr
    samples = sorted((tmp_path / "s").glob("sample_*.png"))
    assert len(samples) == 5 and all(Image.open(p).size == (28, 28) for p in samples)
    assert (tmp_path / "s" / "grid.png").is_file()
    naive_args = ["-n", 5, "-o", tmp_path / "n", "--seed", 3, "--naive"]
    naive = vqt("sample", "--model", tiny_image_run, "--prior", run, *naive_args)
    assert naive.returncode == 0
    for path in samples:  # the cached sampler draws exactly what the naive one draws
        assert np.array_equal(
            np.asarray(Image.open(path)), np.asarray(Image.open(tmp_path / "n" / path.name))
        )


def test_samples_are_drawn_a_batch_at_a_time(tiny_image_run, image_prior, tmp_path):
    run, _ = image_prior
    result = vqt("sample", "--model", tiny_image_run, "--prior", run, "-n", 66, "-o", tmp_path / "s")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "s").glob("sample_*.png"))) == 66
    assert Image.open(tmp_path / "s" / "grid.png").size == (8 * 30 + 2, 8 * 30 + 2)  # the first 64, 8 x 8


@pytest.mark.hostile("media")
@pytest.mark.parametrize("option", [["-n", "0"], ["-n", "-3"], ["--temperature", "nan"],
                                    ["--temperature", "inf"], ["--temperature", "0"]])  # fmt: skip
def test_bad_sample_options_are_one_line(tiny_image_run, image_prior, tmp_path, option):
    run, _ = image_prior
    result = vqt("sample", "--model", tiny_image_run, "--prior", run, *option, "-o", tmp_path / "s")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: -n must be at least 1 and --temperature a number above 0")
    assert not (tmp_path / "s").exists()


def test_prior_of_another_model_and_bad_prior_recipes_are_refused(
    tiny_image_run, image_prior, tiny_speech_run, tmp_path
):
    run, _ = image_prior
    other = vqt("sample", "--model", tiny_speech_run, "--prior", run, "-n", 1, "-o", tmp_path / "x")
    assert other.returncode == 1 and "trained on the codes of another model" in other.stderr
    never = tmp_path / "never"
    missing = vqt(
        "train", ROOT / "recipes/image_prior.yaml", f"tokenizer={tmp_path / 'none'}", f"train.out_dir={never}"
    )
    assert missing.returncode == 1 and "not a vqt run directory" in missing.stderr
    assert not never.exists()  # a refused run leaves no empty run directory behind
    extra = vqt(
        "validate", ROOT / "recipes/image_prior.yaml", f"tokenizer={tiny_image_run}", "data.size=[8,8]"
    )
    assert extra.returncode == 1 and "takes only data.path and data.eval_path" in extra.stderr


def test_speech_prior_samples_audio(tiny_speech_run, tmp_path):
    train_prior("speech", tiny_speech_run, tmp_path / "prior", "train.max_steps=5")
    result = vqt(
        "sample", "--model", tiny_speech_run, "--prior", tmp_path / "prior", "-n", 3, "-o", tmp_path / "s"
    )
    assert result.returncode == 0, result.stderr
    samples = sorted((tmp_path / "s").glob("sample_*.wav"))
    assert len(samples) == 3 and all(read_audio(p)[1]["length"] == 2048 for p in samples)  # one segment each


def test_video_prior_samples_video(tmp_path):
    vq = tmp_path / "vq"
    trained = vqt("train", ROOT / "recipes/video_vqvae.yaml", *TINY_VIDEO, "bottleneck.codebook_size=16",
                  f"train.out_dir={vq}")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    train_prior("video", vq, tmp_path / "prior", "train.max_steps=5", "train.batch_size=2")
    result = vqt("sample", "--model", vq, "--prior", tmp_path / "prior", "-n", 2, "-o", tmp_path / "s")
    assert result.returncode == 0, result.stderr
    samples = sorted((tmp_path / "s").glob("sample_*.mp4"))
    assert len(samples) == 2
    info = video_info(samples[0])
    assert (info["frames"], info["height"], info["width"]) == (4, 16, 16)


def test_prior_trains_data_parallel_like_one_process(tiny_image_run, tmp_path):
    # Adam turns any change of rounding into visible steps, so both runs are fresh processes with one torch
    # thread: run in this test process after the PixelCNN unit tests, the same training rounded otherwise
    constant = [
        "optim.schedule=constant", "optim.warmup_steps=0", "train.max_steps=4", "train.device=cpu",
        "train.threads=1", *TINY_PRIOR,
    ]  # fmt: skip

    def train(out, *launch: str) -> dict:
        overrides = [f"tokenizer={tiny_image_run}", f"train.out_dir={out}", *constant]
        result = run_vqt(
            "train", *launch, str(ROOT / "recipes" / "image_prior.yaml"), *overrides,
            env={"OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    one, two = train(tmp_path / "one"), train(tmp_path / "two", "--nproc", "2")
    assert two["bits_per_code"] == pytest.approx(one["bits_per_code"], rel=1e-4)
    expected = load_tensors(tmp_path / "one" / "model.safetensors")
    for name, tensor in load_tensors(tmp_path / "two" / "model.safetensors").items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_python_api_fits_a_prior(tiny_image_run, tmp_path):
    from vqtoolkit import fit

    overrides = [f"tokenizer={tiny_image_run}", f"train.out_dir={tmp_path / 'prior'}", *TINY_PRIOR]
    run = fit(ROOT / "recipes" / "image_prior.yaml", overrides)
    final = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["split"] == "eval" and 0 < final["bits_per_code"] < 5.1


def test_a_prior_over_a_collapsed_tokenizer_warns(tmp_path):
    from conftest import TINY_IMAGE

    collapsed = tmp_path / "collapsed"
    no_restarts = [
        "bottleneck.codebook_size=64",
        "bottleneck.kmeans_init=false",
        "bottleneck.dead_code_threshold=0",
    ]
    trained = vqt(
        "train", ROOT / "recipes/image_vqvae.yaml", *TINY_IMAGE, *no_restarts, f"train.out_dir={collapsed}"
    )
    assert trained.returncode == 0 and json.loads(trained.stdout)["codebook_used_fraction"] < 0.5
    overrides = [
        f"tokenizer={collapsed}",
        f"train.out_dir={tmp_path / 'prior'}",
        *TINY_PRIOR,
        "train.max_steps=2",
    ]
    result = vqt("train", ROOT / "recipes/image_prior.yaml", *overrides)
    assert result.returncode == 0, result.stderr
    assert f"warning: tokenizer: {collapsed} uses " in result.stderr and "of its 64 codes" in result.stderr
