"""The driver's lease on a run directory: one live driver per run, recoverable from any host.

The lease is the object ``RUN_DIR/lease.json`` (local disk or object store alike) holding the
owner id (random, per driver), host, PID, start time and a heartbeat that the live driver
refreshes every :attr:`Lease.heartbeat_s` seconds from a background thread. Another driver:

* takes over a lease whose heartbeat is older than :attr:`Lease.ttl_s` (its driver is gone:
  killed, or its head node replaced), from any host;
* takes over at once a lease of a dead process on its own host (same host name, PID gone);
* is refused a live-looking lease with a message naming its host, PID and heartbeat age;
  ``force=True`` (``--force``) breaks it after a warning.

Acquiring writes the lease and reads it back after a short settle time: of two drivers that
start together, the one whose write landed last wins and the other is refused (object stores
offer no exclusive create through pyarrow). A driver whose lease was taken from it notices at
its next heartbeat, logs an error and stops refreshing (:attr:`Lease.lost` becomes true).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from arnas_ray.errors import LockError
from arnas_ray.results.rundir import LEASE, RunDir, StorageError

__all__ = ["DEFAULT_TTL_S", "Lease", "LeaseInfo", "read_lease"]

logger = logging.getLogger(__name__)

DEFAULT_TTL_S = 60.0  #: a heartbeat older than this means the driver is gone
DEFAULT_HEARTBEAT_S = 5.0
_SETTLE_S = 0.3  # wait between writing the lease and reading it back


@dataclass(frozen=True)
class LeaseInfo:
    """What a lease file says, and how old its heartbeat is (seconds, by this host's clock)."""

    owner: str
    host: str
    pid: int
    started: float
    heartbeat: float

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.heartbeat)

    def on_this_host_and_dead(self) -> bool:
        return self.host == socket.gethostname() and self.pid > 0 and not _alive(self.pid)

    def to_json(self) -> str:
        return json.dumps({"owner": self.owner, "host": self.host, "pid": self.pid,
                           "started": self.started, "heartbeat": self.heartbeat})

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, heartbeat {self.age_s:.0f} s ago"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lease(run_dir: RunDir) -> LeaseInfo | None:
    """The lease of ``run_dir``, or None when there is none (or it is unreadable)."""
    try:
        data: Any = json.loads(run_dir.read_text(LEASE))
        return LeaseInfo(str(data["owner"]), str(data["host"]), int(data["pid"]),
                         float(data["started"]), float(data["heartbeat"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        logger.warning("ignoring the unreadable lease %s", run_dir.show(LEASE))
        return None


class Lease:
    """Context manager holding ``RUN_DIR/lease.json`` for the lifetime of a driver.

    Args:
        run_dir: the run directory.
        ttl_s: a heartbeat older than this may be taken over.
        heartbeat_s: how often the live driver refreshes the heartbeat.
        force: break a live-looking lease (after a warning).
        wait_s: wait up to this long for a live-looking lease to go stale before refusing.
        on_beat: called from the heartbeat thread after each refresh (the driver polls for a
            stop request there).
    """

    def __init__(self, run_dir: RunDir, *, ttl_s: float = DEFAULT_TTL_S,
                 heartbeat_s: float = DEFAULT_HEARTBEAT_S, force: bool = False, wait_s: float = 0.0,
                 on_beat: Callable[[], None] | None = None):
        if not 0 < heartbeat_s < ttl_s:
            raise ValueError(f"`0 < heartbeat_s < ttl_s` must hold, but got heartbeat_s={heartbeat_s}, "
                             f"ttl_s={ttl_s}")
        self.run_dir, self.ttl_s, self.heartbeat_s = run_dir, ttl_s, heartbeat_s
        self.force, self.wait_s, self.on_beat = force, wait_s, on_beat
        self.info = LeaseInfo(uuid.uuid4().hex, socket.gethostname(), os.getpid(), time.time(), time.time())
        self.held = False
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- acquire ----------------------------------------------------------------------
    def _may_take(self, other: LeaseInfo) -> bool:
        if other.owner == self.info.owner:
            return True
        if other.age_s > self.ttl_s:
            logger.warning("taking over the lease of %s: %s (older than %.0f s)", self.run_dir.uri,
                           other.describe(), self.ttl_s)
            return True
        if other.on_this_host_and_dead():
            logger.warning("taking over the lease of %s: its driver (pid %d on this host) is gone",
                           self.run_dir.uri, other.pid)
            return True
        if self.force:
            logger.warning("--force: breaking the live-looking lease of %s (%s); if that driver is "
                           "still running, two drivers now share the run", self.run_dir.uri, other.describe())
            return True
        return False

    def _refusal(self, other: LeaseInfo) -> LockError:
        wait = max(0.0, self.ttl_s - other.age_s)
        return LockError(
            f"run directory {self.run_dir.uri} is in use by another driver ({other.describe()}); "
            f"wait for it to finish, or if it is gone, resume after its heartbeat is {self.ttl_s:.0f} s "
            f"old (in {wait:.0f} s) or now with --force")

    def acquire(self) -> Lease:
        deadline = time.monotonic() + self.wait_s
        for _ in range(100):
            other = read_lease(self.run_dir)
            if other is not None and not self._may_take(other):
                if time.monotonic() < deadline:
                    time.sleep(min(self.heartbeat_s, max(0.1, deadline - time.monotonic())))
                    continue
                raise self._refusal(other)
            self._write()
            time.sleep(_SETTLE_S)
            now = read_lease(self.run_dir)
            if now is not None and now.owner == self.info.owner:
                self.held = True
                self._start_heartbeat()
                return self
            if now is not None and not self.force:  # another driver's write landed after ours
                raise self._refusal(now)
        raise LockError(f"could not take the lease of {self.run_dir.uri}; try again")

    def _write(self) -> None:
        self.info = LeaseInfo(self.info.owner, self.info.host, self.info.pid, self.info.started, time.time())
        self.run_dir.write_text(LEASE, self.info.to_json())

    # ---- heartbeat --------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="arnas-lease-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                current = read_lease(self.run_dir)
                if current is not None and current.owner != self.info.owner:
                    self.lost = True
                    logger.error("the lease of %s was taken over by another driver (%s); this driver "
                                 "stops refreshing it", self.run_dir.uri, current.describe())
                    return
                self._write()
                if self.on_beat is not None:
                    self.on_beat()
            except StorageError as exc:  # a storage outage: keep trying, the lease may go stale
                logger.warning("cannot refresh the lease of %s: %s", self.run_dir.uri, exc)

    # ---- release ----------------------------------------------------------------------
    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.heartbeat_s)
            self._thread = None
        if self.held and not self.lost:
            try:
                current = read_lease(self.run_dir)
                if current is not None and current.owner == self.info.owner:
                    self.run_dir.delete(LEASE)
            except StorageError as exc:
                logger.warning("cannot remove the lease of %s (it goes stale by itself): %s",
                               self.run_dir.uri, exc)
        self.held = False

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
