"""Adversarial training: discriminators' shapes and feature maps, the losses, and the autoencoder +
adversarial objective through the real CLI (both networks update, losses finite, exact resume on CPU)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import run_vqt

from vqtoolkit.adversarial import discriminator_loss, feature_matching, generator_loss
from vqtoolkit.plugins import registry
from vqtoolkit.rundir import load_tensors

TINY_CODEC = [
    "data.path=",
    "data.eval_path=",
    "data.segment=3200",
    "model.encoder.dim=16",
    "model.encoder.layers=1",
    "model.decoder.dim=16",
    "model.decoder.layers=1",
    "model.latent_dim=16",
    "bottleneck.codebook_size=16",
    "bottleneck.code_dim=4",
    "adversarial.discriminators=[{name: mpd, periods: [2, 3], channels: 4, max_channels: 16},"
    " {name: mrstft, fft_sizes: [256], channels: 4}]",
    "adversarial.start_step=2",
    "train.batch_size=2",
    "train.log_every=1",
    "train.picture_every=0",
    "train.eval_batches=1",
    "train.checkpoint_every=3",
]


@pytest.mark.parametrize(
    "name, options, media",
    [
        ("mpd", {"periods": [2, 3, 5]}, (2, 1, 4000)),
        ("mrstft", {"fft_sizes": [512, 256]}, (2, 1, 4000)),
        ("patch", {"channels": 8, "layers": 3}, (2, 3, 32, 32)),
        ("patch", {"channels": 8, "layers": 2}, (2, 1, 8, 16, 16)),
    ],
)
def test_discriminator_gives_one_verdict_and_feature_maps_per_sub_discriminator(name, options, media):
    torch.manual_seed(0)
    rank = len(media) - 2
    discriminator = registry("discriminators").get(name)(media[1], rank, **options)
    x = torch.randn(*media, requires_grad=True)
    verdicts = discriminator(x)
    expected = len(options.get("periods", options.get("fft_sizes", [None])))
    assert len(verdicts) == expected
    for logits, features in verdicts:
        assert logits.shape[0] == media[0] and logits.shape[1] == 1 and logits.ndim >= 3
        assert len(features) >= 2 and all(f.shape[0] == media[0] for f in features)
        assert all(torch.isfinite(f).all() for f in features)
    generator_loss("hinge", verdicts).backward()
    assert x.grad.abs().sum() > 0  # the verdicts depend on the media: a generator can learn from them


def test_speech_discriminators_refuse_images():
    for name in ("mpd", "mrstft"):
        with pytest.raises(ValueError, match="mono audio"):
            registry("discriminators").get(name)(3, 2)


def test_adversarial_losses_against_hand_computed_values():
    real = [(torch.tensor([[2.0, 0.5]]), [torch.tensor([1.0, -1.0])])]
    fake = [(torch.tensor([[-0.5, 1.5]]), [torch.tensor([0.5, -2.0])])]
    # hinge: mean(relu(1 - real)) + mean(relu(1 + fake)) = (0 + 0.5) / 2 + (0.5 + 2.5) / 2
    assert discriminator_loss("hinge", real, fake).item() == pytest.approx(0.25 + 1.5)
    # least squares: mean((real - 1)^2) + mean(fake^2) = (1 + 0.25) / 2 + (0.25 + 2.25) / 2
    assert discriminator_loss("lsgan", real, fake).item() == pytest.approx(0.625 + 1.25)
    assert generator_loss("hinge", fake).item() == pytest.approx((1.5 + 0) / 2)
    assert generator_loss("lsgan", fake).item() == pytest.approx((2.25 + 0.25) / 2)
    # feature matching: mean |real - fake| / mean |real| = (0.5 + 1) / 2 / 1
    assert feature_matching(real, fake).item() == pytest.approx(0.75, rel=1e-4)


def train_codec(run_dir, *overrides):
    result = run_vqt(
        "train", "recipes/speech_vqvae.yaml", *TINY_CODEC, f"train.out_dir={run_dir}", *overrides
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def state_of(run_dir, prefix):
    return {k: v for k, v in load_tensors(run_dir / "state.safetensors").items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def codec_runs(tmp_path_factory):
    """The tiny codec trained 6 steps straight, and 3 steps then resumed to 6 (a constant rate: a cosine
    schedule over 3 steps is not the first half of one over 6)."""
    whole, parted = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("parted")
    train_codec(whole, "train.max_steps=6", "optim.schedule=constant")
    train_codec(parted, "train.max_steps=3", "optim.schedule=constant")
    at_three = {
        "model": load_tensors(parted / "model.safetensors"),
        "discriminator": state_of(parted, "module.discriminator."),
    }
    result = run_vqt("train", "--resume", str(parted), "train.max_steps=6")
    assert result.returncode == 0, result.stderr
    return whole, parted, at_three


def test_adversarial_objective_updates_generator_and_discriminator(codec_runs):
    whole, parted, at_three = codec_runs
    train = [r for r in records(whole) if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert "disc_loss" not in train[0] and "disc_loss" not in train[1]  # before adversarial.start_step
    for record in train[2:]:
        for key in ("disc_loss", "gen_adv_loss", "feature_loss", "recon", "loss"):
            assert math.isfinite(record[key]), (key, record)
        assert record["loss"] > record["recon"]  # the adversarial terms are in the generator's loss
    discriminator = state_of(parted, "module.discriminator.")
    assert discriminator.keys() == at_three["discriminator"].keys() and discriminator
    assert any(not torch.equal(discriminator[k], at_three["discriminator"][k]) for k in discriminator)
    assert state_of(parted, "optim_discriminator.")  # its own optimizer's moments are saved
    model = load_tensors(parted / "model.safetensors")
    assert any(not torch.equal(model[k], at_three["model"][k]) for k in model)
    assert not any(k.startswith("discriminator") for k in model)  # the shipped weights stay the codec's


def test_adversarial_run_resumes_exactly_on_cpu(codec_runs):
    whole, parted, _ = codec_runs
    losses = [(r["loss"], r.get("disc_loss")) for r in records(whole) if r["split"] == "train"]
    assert [(r["loss"], r.get("disc_loss")) for r in records(parted) if r["split"] == "train"] == losses
    for key, value in load_tensors(whole / "model.safetensors").items():
        assert torch.equal(value, load_tensors(parted / "model.safetensors")[key]), key
    assert all(
        torch.equal(value, state_of(parted, "module.")[key])
        for key, value in state_of(whole, "module.").items()
    )


def test_patch_discriminator_trains_with_the_image_recipe(tmp_path):
    result = run_vqt(
        "train", "recipes/image_vqvae.yaml", "train.max_steps=3", "train.batch_size=4", "train.log_every=1",
        "train.picture_every=0", "train.eval_batches=1", "model.encoder.hidden=8", "model.decoder.hidden=8",
        "adversarial.discriminators=[{name: patch, channels: 8, layers: 2}]", "adversarial.start_step=1",
        f"train.out_dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    train = [r for r in records(tmp_path) if r["split"] == "train"]
    assert "disc_loss" not in train[0] and all(math.isfinite(r["disc_loss"]) for r in train[1:])


def test_a_discriminator_that_does_not_fit_the_media_is_one_line(tmp_path):
    result = run_vqt(
        "train", "recipes/image_vqvae.yaml", "train.max_steps=1", "adversarial.discriminators=[mpd]",
        f"train.out_dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "adversarial.discriminators.0" in lines[0] and "mono audio" in lines[0]


def test_adversarial_objective_trains_data_parallel(tmp_path):
    result = run_vqt(
        "train", "--nproc", "2", "recipes/speech_vqvae.yaml", *TINY_CODEC, "train.max_steps=4",
        f"train.out_dir={tmp_path}", env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    train = [r for r in records(tmp_path) if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(math.isfinite(r["disc_loss"]) and math.isfinite(r["gen_adv_loss"]) for r in train[2:])
    assert state_of(tmp_path, "module.discriminator.")
