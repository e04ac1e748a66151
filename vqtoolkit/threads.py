"""How many CPU threads torch uses: --threads, then train.threads, then OMP_NUM_THREADS, else the cores
that are free when the command starts.

Torch's own default is one thread per core. On a machine where another process is busy, that loses to
fewer threads, because every parallel region waits for its slowest thread and one of them shares a core
(`benchmarks/threads.py` measures it): so the default counts the cores the load average leaves free.
"""

from __future__ import annotations

import os

ENV = "VQT_THREADS"  # set by `vqt --threads N`, so that worker processes inherit the choice


def free_cores() -> int:
    """Cores minus the 1-minute load average (rounded), at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - round(os.getloadavg()[0]))


def choose_threads(recipe_threads: int = 0) -> tuple[int, str]:
    """(threads, why) by precedence: --threads, train.threads, OMP_NUM_THREADS, the free cores."""
    if os.environ.get(ENV, "").isdigit() and int(os.environ[ENV]) > 0:
        return int(os.environ[ENV]), "--threads"
    if recipe_threads > 0:
        return recipe_threads, "train.threads"
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    return free_cores(), "free cores"


def apply_threads(recipe_threads: int = 0) -> int:
    """Set torch's intra-op threads by `choose_threads`; returns the count."""
    import torch  # here: `vqt completion` runs without torch

    threads, _ = choose_threads(recipe_threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
