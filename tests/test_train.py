"""The trainer through the real `vqt` CLI on the shipped Fashion-MNIST sample, with tiny models."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, run_vqt
from vqt_image.dataset import SAMPLE_DIR
from vqt_image.io import read_idx, write_image

TINY = ["model.encoder.hidden=16", "model.decoder.hidden=16", "train.batch_size=16", "train.log_every=1"]
TINY += ["train.device=cpu"]
TINY_VQ = [*TINY, "bottleneck.codebook_size=32"]
TRAINING_ONLY_KEYS = {"run_dir", "step", "skipped_steps", "train_seconds", "threads"}  # not in `vqt eval`
METRIC_KEYS = {"recon_loss", "psnr", "ssim", "codebook_used_fraction", "codebook_perplexity", "examples"}


def train(recipe: str, run_dir, *overrides: str) -> dict:
    tiny = TINY_VQ if recipe == "image_vqvae" else TINY
    result = run_vqt("train", f"recipes/{recipe}.yaml", *tiny, f"train.out_dir={run_dir}", *overrides)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_losses(run_dir) -> list[float]:
    return [r["loss"] for r in records(run_dir) if r["split"] == "train"]


# The constant schedule lets a 20-step run resumed to 40 steps follow the 40-step run. The shared run
# restarts codes idle for 2 steps: that keeps the tiny codebook alive and draws from the global RNG
# at every step (the default, 100, leaves 32 codes collapsed to one within 20 steps). The thread count is
# fixed: by default it follows the machine's load, and another count sums in another order.
RESUMABLE = ["optim.schedule=constant", "train.eval_batches=8", "train.threads=1"]


@pytest.fixture(scope="module")
def vqvae_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("vqvae")
    overrides = [*RESUMABLE, "bottleneck.dead_code_steps=2", "train.max_steps=40", "train.picture_every=20"]
    return run_dir, train("image_vqvae", run_dir, *overrides)


def test_tiny_vqvae_trains_and_its_loss_falls(vqvae_run):
    run_dir, results = vqvae_run
    for name in ("config.yaml", "model.safetensors", "state.safetensors", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    assert sorted(p.name for p in run_dir.glob("recon_*.png")) == ["recon_000020.png", "recon_000040.png"]
    assert results["step"] == 40 and METRIC_KEYS <= results.keys()
    assert results["codebook_used_fraction"] > 0.5 and results["codebook_perplexity"] > 2
    assert results["psnr"] > 8 and 0 < results["ssim"] <= 1
    losses = train_losses(run_dir)
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def resume(run_dir, *overrides: str) -> None:
    result = run_vqt("train", "--resume", str(run_dir), *overrides)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["step"] == 40


def test_resumed_run_repeats_the_uninterrupted_loss_curve(vqvae_run, tmp_path):
    # dead-code restarts every 2 steps draw random numbers all along: the RNG state must resume exactly
    whole, _ = vqvae_run
    overrides = [
        *RESUMABLE,
        "bottleneck.dead_code_steps=2",
        "train.max_steps=20",
        "train.checkpoint_every=10",
    ]
    train("image_vqvae", tmp_path, *overrides)
    resume(tmp_path, "train.max_steps=40")
    assert train_losses(tmp_path) == train_losses(whole)  # bitwise on CPU


def test_gaussian_vae_reports_elbo_and_bits_per_dim(tmp_path):
    results = train("image_vae", tmp_path, "train.max_steps=10", "train.eval_batches=4")
    assert results["bits_per_dim"] > 0 and results["elbo"] < 0
    assert results["bits_per_dim"] == pytest.approx(-results["elbo"] / (28 * 28 * math.log(2)), rel=1e-5)


def test_plain_autoencoder_trains(tmp_path):
    results = train("image_ae", tmp_path, "train.max_steps=10", "train.eval_batches=4")
    assert results["psnr"] > 5 and "codebook_used_fraction" not in results and "elbo" not in results


def test_eval_repeats_the_final_metrics_and_takes_other_data(vqvae_run, tmp_path):
    run_dir, trained = vqvae_run
    result = run_vqt("eval", str(run_dir), "--batches", "8")
    assert result.returncode == 0, result.stderr
    evaluated = json.loads(result.stdout)
    assert evaluated.keys() == trained.keys() - TRAINING_ONLY_KEYS
    assert evaluated["examples"] == trained["examples"] == 8 * 16
    assert evaluated["psnr"] == pytest.approx(trained["psnr"], rel=1e-6)
    usage = f"codebook usage on the held-out data: {evaluated['codebook_used_fraction']:.1%} of 32 codes used"
    assert usage in result.stderr

    images = read_idx(SAMPLE_DIR / "t10k-images-idx3-ubyte.gz")[:20, None].float() / 255
    for index, image in enumerate(images):
        write_image(tmp_path / f"{index:02d}.png", image)
    result = run_vqt("eval", str(run_dir), "--data", str(tmp_path))
    assert result.returncode == 0, result.stderr
    evaluated = json.loads(result.stdout)
    assert evaluated.keys() == trained.keys() - TRAINING_ONLY_KEYS
    assert evaluated["examples"] == 2 and math.isfinite(evaluated["psnr"])


def test_resume_from_a_folder_that_is_not_a_run_fails_in_one_line(tmp_path):
    result = run_vqt("train", "--resume", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path}: not a vqt run directory (no config.yaml)"
    assert result.stdout == ""


@pytest.mark.hostile("run directories")
def test_weights_without_the_restart_state_load_and_other_gaps_are_one_line(vqvae_run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from vqtoolkit.errors import VQTError
    from vqtoolkit.rundir import load_model

    run_dir, _ = vqvae_run
    older = tmp_path / "older"
    shutil.copytree(run_dir, older)
    weights = load_file(older / "model.safetensors")
    restart_state = {"bottleneck.pool", "bottleneck.pool_filled", "bottleneck.usage_share"}
    assert restart_state <= weights.keys()
    save_file({k: v for k, v in weights.items() if k not in restart_state}, older / "model.safetensors")
    model, _ = load_model(older)  # a model saved before the restart state existed
    assert torch.equal(model.bottleneck.codebook, weights["bottleneck.codebook"])
    save_file({k: v for k, v in weights.items() if k != "bottleneck.codebook"}, older / "model.safetensors")
    with pytest.raises(VQTError, match=r"weights do not match .*missing \['bottleneck.codebook'\]"):
        load_model(older)


def test_threads_come_from_the_flag_the_recipe_the_environment_or_the_free_cores(tmp_path):
    import os

    quick = [*TINY_VQ, "train.max_steps=2", "train.eval_batches=1", "train.picture_every=0"]
    plain = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "VQT_THREADS")}

    def threads(*args, env=None, recipe=()):
        result = subprocess.run(
            [sys.executable, "-m", "vqtoolkit", *args, "train", "--overwrite", "recipes/image_vqvae.yaml",
             *quick, *recipe,
             f"train.out_dir={tmp_path / 'run'}"],
            capture_output=True, text=True, env={**plain, **(env or {})}, cwd=ROOT,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["threads"]

    assert threads("--threads", "1", env={"OMP_NUM_THREADS": "2"}, recipe=["train.threads=2"]) == 1
    assert threads(env={"OMP_NUM_THREADS": "2"}, recipe=["train.threads=1"]) == 1
    assert threads(env={"OMP_NUM_THREADS": "1"}) == 1
    cores = len(os.sched_getaffinity(0))
    assert 1 <= threads() <= cores  # the cores the load average leaves free
    bad = run_vqt("--threads", "0", "plugins")
    assert bad.returncode == 2 and "--threads" in bad.stderr


def test_resuming_with_another_architecture_names_the_tensor(vqvae_run, tmp_path):
    import shutil

    run_dir, _ = vqvae_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    result = run_vqt("train", "--resume", str(copy), "bottleneck.codebook_size=64", "train.max_steps=41")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        f"error: {copy / 'model.safetensors'}: tensor bottleneck.codebook is (32, 64)"
    )


def test_warmup_is_at_most_a_tenth_of_a_run_cut_short(tmp_path):
    """A recipe that warms up over 100 steps, cut to 20: two warm-up steps, the full rate, then the cosine
    down towards 0 (instead of ending while the rate still climbs)."""
    run_dir = tmp_path / "run"
    train("image_vqvae", run_dir, "train.max_steps=20", "optim.warmup_steps=100", "optim.lr=0.001")
    rates = [record["lr"] for record in records(run_dir) if "lr" in record]
    assert rates[0] == pytest.approx(0.0005) and rates[1] == pytest.approx(0.001)
    assert rates[-1] == pytest.approx(0.001 * 0.5 * (1 + math.cos(math.pi * 17 / 18)))
    assert all(later <= earlier for earlier, later in zip(rates[1:], rates[2:]))


def test_codebook_ema_follows_a_short_run(tmp_path):
    """Under a cosine schedule the codebook EMA averages over at most a fifth of the run and the dead-code
    usage over a tenth (decays at least 0.8), in every stage of a residual quantizer; a long run and a
    constant schedule keep the recipe's."""
    from vqtoolkit.config import load_recipe
    from vqtoolkit.train.loop import Trainer

    def decays(recipe_name: str, *overrides: str) -> list[float]:
        recipe = load_recipe(
            ROOT / "recipes" / f"{recipe_name}.yaml", [f"train.out_dir={tmp_path}", *overrides]
        )
        modules = Trainer(recipe, overwrite=True).model.bottleneck.modules()
        return [round(module.decay, 6) for module in modules if hasattr(module, "decay")]

    assert decays("image_vqvae", "train.max_steps=100") == [0.95]
    assert decays("image_vqvae", "train.max_steps=10") == [0.8]
    assert (
        decays("image_vqvae", "train.max_steps=600")
        == decays("image_vqvae", "train.max_steps=100000")
        == [0.99]
    )
    assert decays("image_vqvae", "train.max_steps=10", "optim.schedule=constant") == [0.99]
    assert decays("speech_vqvae", "train.max_steps=50", "data.path=", "data.eval_path=") == [0.9] * 4

    def usage_decays(steps: int) -> list[float]:  # the dead-code usage average: a tenth of the run
        recipe = load_recipe(
            ROOT / "recipes" / "speech_vqvae.yaml",
            [f"train.out_dir={tmp_path}", f"train.max_steps={steps}", "data.path=", "data.eval_path="],
        )
        layers = Trainer(recipe, overwrite=True).model.bottleneck.layers
        return [round(layer.usage_decay, 6) for layer in layers]

    assert usage_decays(50) == [0.8] * 4 and usage_decays(100) == [0.9] * 4
    assert usage_decays(36000) == [0.95] * 4  # as the recipe says, for the shipped model's run
