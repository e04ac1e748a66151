"""Interrupted training: real `vqt train` processes stopped by SIGTERM, SIGINT and SIGKILL, then resumed
to the weights of an uninterrupted run; and the health checks: NaN steps skipped or fatal, collapse warned."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, run_vqt, vqt
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset, Subset

from vqtoolkit.config import load_recipe
from vqtoolkit.rundir import read_metadata
from vqtoolkit.train.loop import Trainer

TINY = [
    "model.encoder.hidden=8",
    "model.decoder.hidden=8",
    "model.latent_dim=8",
    "bottleneck.codebook_size=16",
    "train.batch_size=8",
    "train.eval_batches=1",
    "train.picture_every=0",
    "train.log_every=1",
    "train.device=cpu",
]
RESUMABLE = [*TINY, "optim.schedule=constant", "bottleneck.dead_code_steps=2", "train.checkpoint_every=5"]
STEPS = 200  # a few seconds: long enough to be stopped midway
# One torch thread per run: on 2 shared cores more only contend (and runs compared bitwise must match).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture
def one_thread():
    """In-process runs on one thread, as the subprocesses (ONE_THREAD)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_args(run_dir, *overrides: str) -> list[str]:
    return ["train", "recipes/image_vqvae.yaml", *RESUMABLE, f"train.out_dir={run_dir}", *overrides]


def start_training(run_dir, args: list[str] | None = None) -> subprocess.Popen:
    args = args or train_args(run_dir, f"train.max_steps={STEPS}")
    command = [sys.executable, "-m", "vqtoolkit", *args]
    env = {**os.environ, **ONE_THREAD}
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a background job inherits SIGINT ignored, and vqt keeps ignoring it then: undo that for the test
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_steps(run_dir) -> list[int]:
    return [record["step"] for record in records(run_dir) if record["split"] == "train"]


def wait_for_step(run_dir, process: subprocess.Popen, step: int) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if train_steps(run_dir)[-1] >= step:
                return
        except (FileNotFoundError, IndexError, json.JSONDecodeError):  # nothing logged yet, or half a line
            pass
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.02)


def checkpoint_steps(run_dir) -> tuple[int, int]:
    """(model step, state step) from the two checkpoint files' metadata."""
    state = json.loads(read_metadata(run_dir / "state.safetensors")["state"])
    return int(read_metadata(run_dir / "model.safetensors")["step"]), state["step"]


def resume(run_dir) -> subprocess.CompletedProcess:
    result = vqt("train", "--resume", run_dir, f"train.max_steps={STEPS}")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["step"] == STEPS
    return result


def assert_same_weights(run_dir, reference) -> None:
    weights, expected = load_file(run_dir / "model.safetensors"), load_file(reference / "model.safetensors")
    assert weights.keys() == expected.keys()
    different = [name for name in weights if not torch.equal(weights[name], expected[name])]
    assert not different


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run_vqt(*train_args(run_dir, f"train.max_steps={STEPS}"), env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint_and_resume_reaches_the_uninterrupted_weights(
    signum, uninterrupted, tmp_path, one_thread
):
    process = start_training(tmp_path)
    wait_for_step(tmp_path, process, 20)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum  # 143 for SIGTERM, 130 for SIGINT
    assert "Traceback" not in stderr
    message = stderr.strip().splitlines()[-1]
    match = re.fullmatch(
        r"interrupted at step (\d+): checkpoint saved; resume with vqt train --resume (.+)", message
    )
    assert match and match[2] == str(tmp_path), message
    step = int(match[1])
    assert 20 <= step < STEPS  # saved where it stopped, not at the last multiple of checkpoint_every
    assert checkpoint_steps(tmp_path) == (step, step) and train_steps(tmp_path)[-1] == step

    resume(tmp_path)
    assert_same_weights(tmp_path, uninterrupted)  # bitwise on CPU
    assert train_steps(tmp_path) == list(range(1, STEPS + 1))


def test_a_prior_run_saves_a_checkpoint_on_sigterm(uninterrupted, tmp_path):
    prior = ["prior.hidden=16", "prior.layers=3", "train.batch_size=16", "train.log_every=1"]
    args = ["train", "recipes/image_prior.yaml", f"tokenizer={uninterrupted}", f"train.out_dir={tmp_path}"]
    process = start_training(tmp_path, [*args, *prior, "train.max_steps=5000", "train.device=cpu"])
    wait_for_step(tmp_path, process, 5)
    process.terminate()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143 and "Traceback" not in stderr
    step = train_steps(tmp_path)[-1]
    expected = f"interrupted at step {step}: checkpoint saved; resume with vqt train --resume {tmp_path}"
    assert stderr.strip().splitlines()[-1] == expected
    assert checkpoint_steps(tmp_path) == (step, step)


def test_a_killed_run_resumes_from_its_last_checkpoint_with_a_clean_loss_curve(
    uninterrupted, tmp_path, one_thread
):
    process = start_training(tmp_path)
    wait_for_step(tmp_path, process, 23)
    process.kill()
    process.wait(timeout=60)
    model_step, state_step = checkpoint_steps(tmp_path)  # both files load: each was written atomically
    assert model_step == state_step and state_step % 5 == 0 and state_step >= 20
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 99')  # a record the kill cut short

    resume(tmp_path)
    assert_same_weights(tmp_path, uninterrupted)
    assert train_steps(tmp_path) == list(range(1, STEPS + 1))  # the steps redone after the kill logged once
    assert not list(tmp_path.glob(".*.tmp"))


def test_resume_refuses_a_model_and_state_from_different_steps(uninterrupted, tmp_path):
    for name in ("config.yaml", "model.safetensors", "state.safetensors", "metrics.jsonl"):
        (tmp_path / name).write_bytes((uninterrupted / name).read_bytes())
    weights = load_file(tmp_path / "model.safetensors")
    save_file(weights, tmp_path / "model.safetensors", {"modality": "image", "step": str(STEPS - 5)})
    result = vqt("train", "--resume", tmp_path, f"train.max_steps={STEPS + 10}")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {tmp_path}: model.safetensors is from step {STEPS - 5} but state.safetensors from step "
        f"{STEPS} (the run was killed while saving a checkpoint); it cannot be resumed, start it again"
    )


def test_training_that_keeps_producing_nan_stops_naming_the_steps(tmp_path, one_thread):
    # A huge learning rate blows the weights up after the first step; every later loss is NaN.
    overrides = ["optim.lr=1.0e+30", "optim.warmup_steps=0", "train.max_bad_steps=3", "train.max_steps=40"]
    result = vqt(
        "train", ROOT / "recipes" / "image_vqvae.yaml", *TINY, f"train.out_dir={tmp_path}", *overrides
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: training diverged: loss was (nan|inf) at steps 2-5 "
        r"\(4 in a row, train.max_bad_steps is 3\); lower optim.lr or check the data",
        message,
    ), message


class WithNaNImage(Dataset):
    """A dataset whose first image is all NaN: a broken example that slipped through."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.dataset[index]
        return torch.full_like(image, float("nan")) if index == 0 else image


def test_a_nan_batch_is_skipped_and_counted_without_poisoning_the_codebook(tmp_path, one_thread):
    steps = 12
    recipe = load_recipe(ROOT / "recipes" / "image_vqvae.yaml", [*TINY, f"train.max_steps={steps}"])
    trainer = Trainer(recipe, run_dir=tmp_path)
    # 16 examples in batches of 8: the NaN image lands in one of the 2 batches of each epoch
    trainer.train_set = WithNaNImage(Subset(trainer.train_set, range(16)))
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    results = trainer.fit()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # put back
    assert results["skipped_steps"] == steps // 2
    assert all(torch.isfinite(t).all() for t in trainer.model.state_dict().values() if t.is_floating_point())
    train = [record for record in records(tmp_path) if record["split"] == "train"]
    assert len(train) == steps // 2  # skipped steps log nothing; each record counts those before it
    assert all(record["skipped_steps"] == record["step"] - (i + 1) for i, record in enumerate(train))
    assert all(record["loss"] < 1 for record in train)


def test_codebook_collapse_is_warned_about_in_the_log_and_on_stderr(tmp_path, one_thread):
    # Without k-means init or restarts, a 64-code codebook that starts near zero collapses to one code
    overrides = [
        "bottleneck.codebook_size=64",
        "bottleneck.kmeans_init=false",
        "bottleneck.dead_code_steps=0",
        "bottleneck.dead_code_threshold=0",
    ]
    overrides += ["train.max_steps=30", "train.log_every=5", f"train.out_dir={tmp_path}"]
    result = vqt("train", ROOT / "recipes" / "image_vqvae.yaml", *TINY, *overrides)
    assert result.returncode == 0, result.stderr
    warned = [record for record in records(tmp_path) if "warning" in record]
    # once low usage has lasted 10 steps in a row (and the first 10% of the 30 steps are past)
    assert [record["step"] for record in warned] == [10, 15, 20, 25, 30]
    usage = warned[0]["usage"]
    expected = f"codebook collapse: {usage:.1%} of codes used at step 10, under 5% for the last 10 steps"
    assert usage < 0.05 and warned[0]["warning"] == expected
    assert result.stderr.count("warning: codebook collapse") == 1  # said once, not at every log step
    assert re.search(r"usage=0\.0[0-4]!", result.stderr)  # the progress bar marks the low usage
