"""One live driver per run directory (issue 9, item 5; the Ray half is in test_ray_faults.py).

A second driver is refused with a :class:`~arnas_ray.errors.LockError` naming the holder's
host and PID (the holder is a real subprocess); a lock left by a dead process is detected as
stale and taken over; of many contenders for a stale lock exactly one wins.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from arnas_ray.errors import LockError
from arnas_ray.sweep.lock import RunLock

REPO = Path(__file__).resolve().parents[2]


def _holder(run_dir: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        from arnas_ray.sweep.lock import RunLock
        with RunLock({str(run_dir)!r}):
            print("HELD", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "HELD"  # type: ignore[union-attr]
    return proc


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has this PID now (until it is reused)


def test_second_driver_is_refused_with_holder(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(LockError) as info:
            RunLock(tmp_path).acquire()
        msg = str(info.value)
        assert f"pid {proc.pid}" in msg and socket.gethostname() in msg and str(tmp_path) in msg
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == proc.pid  # untouched
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


def test_lock_of_killed_driver_is_taken_over(tmp_path):
    proc = _holder(tmp_path)
    proc.send_signal(signal.SIGKILL)  # dies without releasing: the lock file stays
    proc.wait(30)
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == proc.pid
    with RunLock(tmp_path) as lock:
        assert lock.held
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(LockError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()  # and it protects again
    assert not (tmp_path / ".lock").exists()


def test_stale_lock_from_dead_pid_is_taken_over(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(),
                                                "since": 0}))
    with RunLock(tmp_path) as lock:
        assert lock.held


def test_lock_of_other_host_is_not_taken_over(tmp_path):
    """A PID on another host cannot be checked: the lock is respected, the message says how."""
    (tmp_path / ".lock").write_text(json.dumps({"host": "elsewhere.example", "pid": _dead_pid()}))
    with pytest.raises(LockError, match="elsewhere.example"):
        RunLock(tmp_path).acquire()


@pytest.mark.parametrize("round_", range(5))
def test_one_winner_among_contenders_for_a_stale_lock(tmp_path, round_):
    """Eight threads race to take over one stale lock: exactly one holds it at the end.

    (Before the take-over guard, a slow contender could remove the winner's fresh lock: about
    one round in seven had two winners.)"""
    (tmp_path / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid()}))
    start = threading.Barrier(8)
    won, lost = [], []

    def contend():
        lock = RunLock(tmp_path)
        start.wait()
        try:
            lock.acquire()
            won.append(lock)
        except LockError as exc:
            lost.append(exc)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # threads share one PID, so later contenders see a live holder and are refused
    assert len(won) == 1 and len(lost) == 7, (won, lost)
