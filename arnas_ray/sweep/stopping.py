"""Stopping a sweep gracefully: ``arnas-ray sweep stop RUN_DIR`` and Ctrl-C.

``sweep stop`` writes a request object (``stop.json``) into the run directory; the live
driver's lease heartbeat polls for it. While a stage's experiment runs, the driver then
signals itself SIGUSR1, which Ray Tune handles like Ctrl-C: it saves its experiment state and
ends the trials, which stay resumable (their checkpoints are in storage). The driver writes
the table (their rows ``stopped``), the summary and the report, starts no further stage, and
exits 0; ``sweep resume`` continues them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

from arnas_ray.results.rundir import STOP, RunDir
from arnas_ray.sweep.spec import SweepSpec
from arnas_ray.sweep.tuning import Outcome, Stage, fit_stage, say

__all__ = ["StopRequests", "request_stop"]

logger = logging.getLogger(__name__)


def request_stop(run_dir: RunDir) -> None:
    """Ask the driver of ``run_dir`` to stop (it reacts within one heartbeat)."""
    run_dir.write_text(STOP, json.dumps({"requested_at": time.time(), "host": socket.gethostname(),
                                         "pid": os.getpid()}))


class StopRequests:
    """``sweep stop`` (a request object in the run directory) and Ctrl-C: the driver stops
    gracefully. The lease's heartbeat thread polls for the request; while a stage's experiment
    runs, the driver signals itself SIGUSR1, which Tune handles like Ctrl-C (it saves its
    state and ends the trials, which stay resumable); between stages the flag is checked."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir
        self.event = threading.Event()
        self.in_fit = False
        self._main = threading.current_thread() is threading.main_thread()

    def poll(self) -> None:
        if self.event.is_set() or not self.run_dir.exists(STOP):
            return
        self.event.set()
        say("[stop] stop requested (%s): ending the running trials at their checkpoints", self.run_dir.show(STOP))
        if self.in_fit and self._main:
            os.kill(os.getpid(), signal.SIGUSR1)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if self.run_dir.exists(STOP):
            logger.warning("removing an old stop request %s", self.run_dir.show(STOP))
            self.run_dir.delete(STOP)
        old = signal.signal(signal.SIGUSR1, lambda *_: self.event.set()) if self._main else None
        try:
            yield
        finally:
            if self._main:
                signal.signal(signal.SIGUSR1, old)
            if self.event.is_set():
                self.run_dir.delete(STOP)

    def fit(self, spec: SweepSpec, stage: Stage, run_dir: RunDir, sha: str | None) -> Outcome:
        self.in_fit = True
        try:
            outcome = fit_stage(spec, stage, run_dir, sha)
        finally:
            self.in_fit = False
        if outcome.interrupted:  # Ctrl-C (Tune caught it) or the request above
            self.event.set()
        return outcome
