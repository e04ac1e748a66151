"""Data-parallel training over torch.distributed: DDP and the few collectives the trainer needs (the
process group, the ranks and the launcher are in vqtoolkit.parallel).

Every rank runs the same trainer on its slice of each global batch (`BatchStream`); DDP averages the
gradients, the quantizer sums its codebook statistics over ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import inspect
import warnings

import torch
import torch.distributed as dist

from vqtoolkit.parallel import Ranks, barrier, current, setup, shutdown

__all__ = ["Ranks", "barrier", "current", "setup", "shutdown", "data_parallel"]


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
