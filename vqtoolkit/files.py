"""Writing files safely: through a temporary file and a rename, and never over the command's own input."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from vqtoolkit.errors import VQTError

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # reading the umask means setting it: put it back at once


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    atomic_write_all([(path, write)])


def atomic_write_all(files: list[tuple[Path, Callable[[str], None]]]) -> None:
    """Several files written as `atomic_write` does, all synced before the first rename: a crash can leave
    some old and some new only in the moment between two renames, which happen in the order given."""
    temporaries, path = [], None
    try:
        for path, write in files:
            fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.", suffix=".tmp")
            os.close(fd)
            temporaries.append(tmp)
            write(tmp)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; give them the usual mode
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        for (path, _), tmp in zip(files, temporaries):
            os.replace(tmp, path)
    except OSError as exc:  # a full disk, a read-only folder: name the user's file, not the temporary one
        raise VQTError(f"{path}: cannot write it ({exc.strerror or exc})") from None
    finally:
        for tmp in temporaries:
            if os.path.exists(tmp):
                os.unlink(tmp)


def refuse_input_as_output(output: Path, inputs: Iterable[Path]) -> None:
    """A one-line error when `output` is one of `inputs` (writing it would destroy what is being read)."""
    for source in inputs:
        if Path(output).exists() and Path(source).exists() and os.path.samefile(output, source):
            raise VQTError(f"{output}: is the input {source}; choose another output path")
