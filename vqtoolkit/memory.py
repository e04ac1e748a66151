"""How glibc's allocator serves big tensors (Linux): kept flat for streaming long media, kept in the
process for training; and a process's peak memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

# mallopt parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024  # streaming long media
KEPT_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # training: the largest threshold glibc takes
KEEP_FREED_BYTES = 2**31 - 1  # the largest value mallopt takes (an int)
SYSTEM_MALLOC_ENV = "VQT_SYSTEM_MALLOC"  # =1: leave glibc's settings as they are for training


def _mallopt(*settings: tuple[int, int]) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return all(bool(libc.mallopt(parameter, value)) for parameter, value in settings)
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False


def fix_mmap_threshold() -> bool:
    """Serve every allocation of 4 MB or more with its own mmap, returned to the system when freed.

    By default glibc raises this threshold (up to 32 MB) each time a large block is freed, after which
    the model's activations come from the heap; interleaved there with the allocations of PyAV's decoding
    thread, they fragment it, and a long 720p video then took 0.8 to 2.4 GB to tokenize from one run to
    the next. With the threshold fixed it stays flat (benchmarks/memory.py --video-720p). Setting it also
    turns the dynamic adjustment off. Returns whether it was set (glibc only)."""
    return _mallopt((M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def keep_freed_memory() -> bool:
    """Keep the memory of freed tensors in the process for the next training step (glibc only).

    Every step frees its activations and allocates the same sizes again. By default glibc gives each
    block above a threshold (128 KB, raised as large blocks are freed, up to 32 MB) its own mmap,
    unmapped when freed, and hands the heap's free top back above twice that, so the next step faults
    the pages in again and the kernel zeroes them; on a virtual machine each 4 KiB fault costs
    microseconds. Here blocks up to 32 MB come from the heap and its top is kept (up to 2 GB): the
    image recipe's training process faults a ninth as often and steps faster, the speech recipe's as fast
    (`benchmarks/allocator.py`), and `benchmarks/quantizer.py` times the quantizer under it. Blocks
    over 32 MB (a corpus read at the start) keep their own mmap. VQT_SYSTEM_MALLOC=1 leaves glibc's
    settings alone. Returns whether they were set."""
    if os.environ.get(SYSTEM_MALLOC_ENV) == "1":
        return False
    return _mallopt((M_MMAP_THRESHOLD, KEPT_MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


def restart_peak() -> int:
    """Reset this process's peak resident memory (VmHWM) to its resident memory now, in KiB, which it
    returns: `peak_kib()` after some work, less this, is what the work added at its peak."""
    Path("/proc/self/clear_refs").write_text("5")
    return resident_kib("VmRSS")


def peak_kib() -> int:
    """This process's peak resident memory since the last `restart_peak`, in KiB."""
    return resident_kib("VmHWM")


def resident_kib(field: str) -> int:
    """A memory line of /proc/self/status (VmRSS, VmHWM, ...), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")
