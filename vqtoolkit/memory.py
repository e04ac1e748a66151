"""Keep glibc's heap from growing without bound when big tensors and a decoding thread interleave, and
measure a process's peak memory (Linux)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from pathlib import Path

M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


def fix_mmap_threshold() -> bool:
    """Serve every allocation of 4 MB or more with its own mmap, returned to the system when freed.

    By default glibc raises this threshold (up to 32 MB) each time a large block is freed, after which
    the model's activations come from the heap; interleaved there with the allocations of PyAV's decoding
    thread, they fragment it, and a long 720p video then took 0.8 to 2.4 GB to tokenize from one run to
    the next. With the threshold fixed it stays flat (benchmarks/memory.py --video-720p). Setting it also
    turns the dynamic adjustment off. Returns whether it was set (glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False


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
