"""Stopping training cleanly on SIGINT (Ctrl-C) and SIGTERM (`kill`, a job scheduler's time limit)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving a checkpoint; the CLI exits with `exit_code`. A
    KeyboardInterrupt, so that code calling `fit` and catching Exception does not swallow a Ctrl-C."""

    def __init__(self, step: int, run_dir: Path, signum: int, nproc: int = 1):
        launch = f"vqt train --nproc {nproc}" if nproc > 1 else "vqt train"
        super().__init__(
            f"interrupted at step {step}: checkpoint saved; resume with {launch} --resume {run_dir}"
        )
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class StopOnSignals:
    """While active, SIGINT and SIGTERM only note themselves: the training loop finishes its step, then
    `check` saves a checkpoint and stops. A second signal stops at once, saving nothing (the last
    checkpoint stays whole: it is written atomically). The previous handlers come back on exit.

    With several training processes, `agree` takes this process's signal number (0 for none) and returns
    the largest over all of them, so that all stop at the same step; `nproc` goes into the resume hint.
    """

    def __init__(self, agree: Callable[[int], int] | None = None, nproc: int = 1) -> None:
        self.received: int | None = None
        self.agree, self.nproc = agree, nproc
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for signum in STOP_SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. SIGINT of a background job
                    self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: not set by Python

    def _note(self, signum: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def check(self, step: int, run_dir: Path, save_checkpoint: Callable[[], None]) -> None:
        """Between two steps: after a signal, save a checkpoint and raise `Interrupted`."""
        received = self.agree(self.received or 0) if self.agree else self.received
        if received:
            save_checkpoint()
            raise Interrupted(step, run_dir, received, self.nproc)
