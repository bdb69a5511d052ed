"""A run-directory lock: one live driver per run directory.

The lock file ``RUN_DIR/.lock`` is created with ``O_CREAT | O_EXCL`` and holds the holder's
host, PID and start time. A second driver is refused with a message naming the holder. A lock
whose holder is on this host and no longer alive is stale: it is taken over by renaming it away
atomically (only one contender can win the rename) and creating a fresh one.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from arnas_ray.errors import LockError

__all__ = ["RunLock"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Context manager holding ``RUN_DIR/.lock`` for the lifetime of a driver."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.path = Path(run_dir) / ".lock"
        self.held = False

    def _create(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, fh)
        return True

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, OSError):
            return None

    def _remove_stale(self, info: dict) -> bool:
        """Remove the lock file if it still holds the stale ``info``; False if another contender
        is doing so. A guard file serialises take-overs: without it, a contender that read the
        stale holder earlier could remove the fresh lock a faster contender has just created."""
        guard = self.path.with_name(".lock.takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:  # a guard older than a few seconds was left by a contender that died
                if time.time() - guard.stat().st_mtime > 10:
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return False
        os.close(fd)
        try:
            if self.holder() == info:  # still the same stale lock, not a fresh one
                self.path.unlink(missing_ok=True)
            return True
        finally:
            guard.unlink(missing_ok=True)

    def acquire(self) -> RunLock:
        for _ in range(3):
            if self._create():
                self.held = True
                return self
            info = self.holder()
            if info is None:  # being written or removed right now
                time.sleep(0.05)
                continue
            host, pid = info.get("host"), int(info.get("pid", -1))
            if host == socket.gethostname() and pid > 0 and not _alive(pid):
                if not self._remove_stale(info):
                    time.sleep(0.05)
                continue
            raise LockError(
                f"run directory {str(self.path.parent)!r} is in use by another driver "
                f"(host {host}, pid {pid}); wait for it to finish, or if that process is gone on another "
                f"host, delete {str(self.path)!r}"
            )
        raise LockError(f"could not take the lock {str(self.path)!r}; try again")

    def release(self) -> None:
        if self.held:
            info = self.holder()
            if info is not None and info.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
