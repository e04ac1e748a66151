"""Data-parallel training: real 2-process runs on the gloo backend (CPU), through `vqt train --nproc 2` and
through torch.multiprocessing, against one process trained on the combined batch. EMA codebook, k-means
init and dead-code restarts are all on, so every synchronised piece of the quantizer takes part."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
from conftest import ROOT, run_vqt, vqt
from safetensors.torch import load_file, save_file

from vqtoolkit.config import load_recipe
from vqtoolkit.rundir import read_metadata
from vqtoolkit.train.loop import Trainer

RECIPE = ROOT / "recipes" / "image_vqvae.yaml"
OVERRIDES = [
    "model.encoder.hidden=8",
    "model.decoder.hidden=8",
    "model.latent_dim=8",
    "bottleneck.codebook_size=64",  # more codes than one step's latents use: restarts happen
    "bottleneck.dead_code_steps=2",
    "train.batch_size=8",  # the global batch: 4 per process
    "train.eval_batches=1",
    "train.picture_every=0",
    "train.log_every=1",
    "train.device=cpu",
    "optim.schedule=constant",  # the same rates in a run stopped early and one that runs through
    "optim.warmup_steps=0",
]
# Float rounding differs between one and two processes (sums in another order); within a few steps a
# latent about as near two codes goes to the other one (one EMA count off by 1 - decay), so compare early.
STEPS = 4
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def train_in_process(run_dir, steps: int = STEPS) -> dict[str, torch.Tensor]:
    trainer = Trainer(load_recipe(RECIPE, [*OVERRIDES, f"train.max_steps={steps}"]), run_dir=run_dir)
    trainer.fit()
    return {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}


def assert_close(weights: dict, expected: dict) -> None:
    assert weights.keys() == expected.keys()
    for name in weights:
        torch.testing.assert_close(weights[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """weights(steps): weights and codebook of one process trained on the whole (combined) batch."""
    cache = {}

    def weights(steps: int) -> dict[str, torch.Tensor]:
        if steps not in cache:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            run_dir = tmp_path_factory.mktemp("one_process")
            try:
                cache[steps] = train_in_process(run_dir, steps)
            finally:
                torch.set_num_threads(threads)
            records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            assert sum(r.get("restarts", 0) for r in records) > 0  # the restarts path ran
            assert cache[steps]["bottleneck.initialized"]  # k-means ran
        return cache[steps]

    return weights


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_rank(rank: int, port: int, out_dir) -> None:
    """One of two processes (torch.multiprocessing.spawn): trains, then saves its own weights."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    weights = train_in_process(out_dir / "run")
    save_file(weights, out_dir / f"rank{rank}.safetensors")
    torch.distributed.destroy_process_group()


def test_both_ranks_hold_the_same_codebook_and_weights_as_one_process(one_process, tmp_path):
    mp.spawn(train_rank, args=(free_port(), tmp_path), nprocs=2)
    rank0, rank1 = (load_file(tmp_path / f"rank{rank}.safetensors") for rank in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert not [name for name in rank0 if not torch.equal(rank0[name], rank1[name])]  # bitwise
    assert_close(rank0, one_process(STEPS))
    # and the run directory is rank 0's alone: one record per step
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [*range(1, STEPS + 1), STEPS]  # the train records, then the final eval


def test_vqt_train_nproc_2_matches_one_process_and_only_rank_0_writes(one_process, tmp_path):
    args = [str(RECIPE), *OVERRIDES, f"train.max_steps={STEPS}", f"train.out_dir={tmp_path}"]
    result = run_vqt("train", "--nproc", "2", *args, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "warning" not in result.stderr.lower()
    assert json.loads(result.stdout)["step"] == STEPS  # one JSON: rank 0's
    assert result.stderr.count("train:") <= 2 * STEPS + 2  # one progress bar, not one per rank
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [*range(1, STEPS + 1), STEPS]
    assert all(0 <= r["data_wait_fraction"] < 1 for r in records[:-1])
    assert_close(load_file(tmp_path / "model.safetensors"), one_process(STEPS))


def test_ctrl_c_stops_every_rank_with_a_checkpoint_and_the_run_resumes(tmp_path):
    args = ["train", "--nproc", "2", str(RECIPE), *OVERRIDES, f"train.out_dir={tmp_path}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "vqtoolkit", *args, "train.max_steps=100000"],
        cwd=ROOT,
        env={**os.environ, **ONE_THREAD},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )
    metrics, deadline = tmp_path / "metrics.jsonl", time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends the launcher; it passes it on to the ranks
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    messages = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(messages) == 1, stderr  # rank 0's
    match = re.fullmatch(
        r"interrupted at step (\d+): checkpoint saved; resume with vqt train --nproc 2 --resume (.+)",
        messages[0],
    )
    assert match and match[2] == str(tmp_path), messages[0]
    step = int(match[1])
    state = json.loads(read_metadata(tmp_path / "state.safetensors")["state"])
    assert int(read_metadata(tmp_path / "model.safetensors")["step"]) == state["step"] == step

    result = run_vqt(
        "train", "--nproc", "2", "--resume", str(tmp_path), f"train.max_steps={step + 2}", env=ONE_THREAD
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["step"] == step + 2
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, step + 3))


def test_user_mistakes_give_one_line(tmp_path):
    result = vqt(
        "train", "--nproc", "2", RECIPE, *OVERRIDES, "train.batch_size=9", f"train.out_dir={tmp_path}"
    )
    assert result.returncode == 1
    assert result.stderr == "error: train.batch_size: 9 does not split evenly over 2 processes\n"
    # a mistake met by the workers themselves: every rank meets it, rank 0 reports it
    missing = tmp_path / "missing"
    result = run_vqt("train", "--nproc", "2", str(RECIPE), *OVERRIDES, f"data.path={missing}", env=ONE_THREAD)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {missing}: no such file or directory"], (
        result.stderr
    )
