"""The processes of one job under torch.distributed: this process's rank from torchrun's environment, the
process group (nccl on CUDA, gloo on CPU), a barrier, and the launcher behind `vqt train --nproc N` and
`vqt tokenize --nproc N`. Training's own collectives are in vqtoolkit.train.distributed.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from vqtoolkit.errors import VQTError

LAUNCHER_ENV = "TORCHELASTIC_RUN_ID"  # set by torchrun (and so by `vqt ... --nproc`) in every worker


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of a job: (0, 1, 0) when running alone."""

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


def setup(device: torch.device, timeout: timedelta | None = None) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun set up (nccl on CUDA, gloo on CPU); each rank gets its own GPU.
    Alone (WORLD_SIZE unset or 1) nothing happens. `timeout` bounds a collective's wait (torch's default
    when None): a job whose ranks finish far apart, like tokenizing a corpus, needs a long one."""
    ranks = current()
    if not ranks.active:
        return ranks, device
    if device.type == "cuda":
        # checked alike on every rank, so that rank 0, which reports errors, does too
        per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", ranks.local_rank + 1))
        if per_machine > torch.cuda.device_count():
            raise VQTError(
                f"{per_machine} processes on this machine but {torch.cuda.device_count()} "
                "GPU(s): start at most one process per GPU"
            )
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        options = {"timeout": timeout} if timeout else {}
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **options)
    return ranks, device


def shutdown(together: bool = False) -> None:
    """Leave the process group. `together` (when every rank finished alike): a barrier first, since a rank
    that tears gloo down while another still finishes a collective can abort that one."""
    if dist.is_available() and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()


def main_says(flag: bool, device: torch.device) -> bool:
    """Rank 0's `flag` on every rank (this process's own when alone): one decision that rank 0 took."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    tensor = torch.tensor([int(flag)], device=device)  # nccl sends only GPU tensors
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def launch(nproc: int, command: str, command_line: list[str]) -> int:
    """Run `vqt COMMAND COMMAND_LINE` in `nproc` processes on this machine, as `torchrun --standalone` would
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
        [*standalone, f"--nproc-per-node={nproc}", "--module", "vqtoolkit", command, *command_line]
    )
    config, entrypoint, entry_args = config_from_args(args)
    try:
        elastic_launch(config, entrypoint)(*entry_args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode < 0:
            raise VQTError(f"{command} process {rank} was killed by {failure.signal_name()}") from None
        return failure.exitcode
    except SignalException as exc:  # passed on to the workers, which saved a checkpoint and stopped
        return 128 + int(exc.sigval)
    except KeyboardInterrupt:  # before the workers started
        return 130
    return 0
