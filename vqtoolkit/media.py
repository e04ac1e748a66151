"""What the modality plugins share: finding media files, the held-out split, and atomic PyAV writers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av

from vqtoolkit.errors import VQTError

HELD_OUT_EVERY = 10


def media_files(path: Path, extensions: tuple[str, ...], kind: str) -> list[Path]:
    """The sorted `kind` files (by extension) of a folder, recursively, or the file itself."""
    if not path.exists():
        raise VQTError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix.lower() not in extensions:
            raise VQTError(f"{path}: not a {kind} file or folder of them ({', '.join(extensions)})")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in extensions and p.is_file())
    if not files:
        raise VQTError(f"{path}: folder holds no {kind} files ({', '.join(extensions)})")
    return files


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def check_file(path: Path, kind: str) -> None:
    if not path.exists():
        raise VQTError(f"{path}: no such file or directory")
    if path.is_dir():
        raise VQTError(f"{path}: is a directory, not {'an' if kind[0] in 'aeiou' else 'a'} {kind} file")
    if path.stat().st_size == 0:
        raise VQTError(f"{path}: empty file")


@contextmanager
def reading_media(path: Path, kind: str) -> Iterator[None]:
    """Turn what PyAV raises for a missing, foreign, truncated or corrupt file into one-line VQTErrors."""
    check_file(path, kind)
    try:
        yield
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as exc:
        detail = exc.strerror if isinstance(exc, av.error.FFmpegError) and exc.strerror else first_line(exc)
        raise VQTError(f"{path}: not a readable {kind} file ({detail})") from None


def stream_duration(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    """Seconds, from the stream's header or else the container's; None when neither says."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def is_held_out(index: int, count: int) -> bool:
    """Whether file `index` of `count` sorted files belongs to the test split: every 10th file, or the
    last one when there are fewer than 10."""
    return index == count - 1 if count < HELD_OUT_EVERY else index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1


class AtomicWriter:
    """Base of the PyAV writers: encode into a hidden temporary file beside the target, which takes the
    target's name only when closed without an error; an error or an exception removes it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.container: av.container.OutputContainer | None = None

    def _finish(self) -> None:
        """Close the container and move the file into place."""
        self.container.close()
        self.container = None
        os.replace(self.temp, self.path)

    def _discard(self) -> None:
        container, self.container = self.container, None
        if container is not None:
            try:
                container.close()
            except (av.error.FFmpegError, OSError, ValueError):
                pass
        self.temp.unlink(missing_ok=True)

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self._discard()
