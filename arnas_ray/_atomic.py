"""Atomic file writes: write to a temporary file in the same directory, fsync, rename.

A reader sees either the previous complete file or the new complete file, never a partial one,
also when the writer is killed between write and rename. Only the standard library and
pyarrow's filesystem layer are used, so every layer may import this module.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_with", "hold_before_publish"]

# Test hook: seconds to sleep between writing the new content and publishing it under its
# name (the rename of a local file, the upload of an object), for crash tests.
_SLEEP_ENV = "ARNAS_RAY_ATOMIC_SLEEP"


def hold_before_publish() -> None:
    """Sleep ``$ARNAS_RAY_ATOMIC_SLEEP`` seconds (crash tests only; unset: return at once)."""
    delay = float(os.environ.get(_SLEEP_ENV, "0") or 0)
    if delay > 0:
        import time

        time.sleep(delay)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        hold_before_publish()
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and atomically move the result onto ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)
