"""Data-parallel training over torch.distributed: the process group from torchrun's environment, the few
collectives the trainer needs, and the launcher behind `vqt train --nproc N`.

Every rank runs the same trainer on its slice of each global batch (`BatchStream`); DDP averages the
gradients, the quantizer sums its codebook statistics over ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import inspect
import logging
import os
import uuid
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vqtoolkit.errors import VQTError

LAUNCHER_ENV = "TORCHELASTIC_RUN_ID"  # set by torchrun (and so by `vqt train --nproc`) in every worker


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes: (0, 1, 0) when training alone."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def current() -> Ranks:
    """From an initialised process group, else from torchrun's RANK / WORLD_SIZE / LOCAL_RANK."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return Ranks(dist.get_rank(), dist.get_world_size(), local)
    env = os.environ
    return Ranks(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def setup(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun set up (nccl on CUDA, gloo on CPU); each rank gets its own GPU.
    Alone (WORLD_SIZE unset or 1) nothing happens."""
    ranks = current()
    if not ranks.active:
        return ranks, device
    if device.type == "cuda":
        # checked alike on every rank, so that rank 0, which reports errors, does too
        per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", ranks.local_rank + 1))
        if per_machine > torch.cuda.device_count():
            raise VQTError(
                f"{per_machine} training processes on this machine but {torch.cuda.device_count()} "
                "GPU(s): start at most one process per GPU"
            )
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks, device


def data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP around `model`: gradients averaged over ranks in the backward pass.

    No buffer broadcast before each forward: the codebook's EMA buffers are already the same on every
    rank (the quantizer sums its statistics over ranks), so rank 0's copy would only add traffic.
    """
    from torch.nn.parallel import DistributedDataParallel

    # A conv weight with one input channel has two equally valid layouts; DDP warns when they differ.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    options = {"device_ids": [device.index] if device.type == "cuda" else None}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:  # newer torch
        options["forward_sync_buffers"] = False
    else:
        options["broadcast_buffers"] = False
    return DistributedDataParallel(model, **options)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _reduce(values: list[float], op, device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def all_true(flag: bool, device: torch.device) -> bool:
    """True only where every rank says True: one decision, taken the same way on all ranks."""
    return bool(_reduce([float(flag)], dist.ReduceOp.MIN, device)[0])


def largest(value: int, device: torch.device) -> int:
    """The largest of the ranks' values (e.g. a signal number, 0 where none arrived)."""
    return int(_reduce([float(value)], dist.ReduceOp.MAX, device)[0])


def mean_over_ranks(stats: dict[str, float], device: torch.device) -> dict[str, float]:
    """Each number averaged over the ranks (every rank must call this with the same keys)."""
    if not (dist.is_available() and dist.is_initialized()) or not stats:
        return stats
    sums = _reduce(list(stats.values()), dist.ReduceOp.SUM, device)
    return {key: value / dist.get_world_size() for key, value in zip(stats, sums)}


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def launch(nproc: int, train_args: list[str]) -> int:
    """Run `vqt train TRAIN_ARGS` in `nproc` processes on this machine, as `torchrun --standalone` would
    (this process is torchrun's agent); returns the exit code. A worker's error is that worker's to
    report: here only its exit code passes on, so a mistake still reads as one line."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    if LAUNCHER_ENV in os.environ:
        raise VQTError("--nproc: already running under torchrun; leave --nproc out")
    # torchrun would give each worker one thread; share the cores instead (matters on CPU)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # torchrun's notes on starting and stopping workers, and its report of a worker that exited with an
    # error (which that worker has already explained); each of its loggers sets its own level
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    standalone = ["--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", f"--rdzv-id={uuid.uuid4()}"]
    args = get_args_parser().parse_args(
        [*standalone, f"--nproc-per-node={nproc}", "--module", "vqtoolkit", "train", *train_args]
    )
    config, command, command_args = config_from_args(args)
    try:
        elastic_launch(config, command)(*command_args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode < 0:
            raise VQTError(f"training process {rank} was killed by {failure.signal_name()}") from None
        return failure.exitcode
    except SignalException as exc:  # passed on to the workers, which saved a checkpoint and stopped
        return 128 + int(exc.sigval)
    except KeyboardInterrupt:  # before the workers started
        return 130
    return 0
