"""One live driver per run directory, recoverable from any host: the lease (issue 14, item 3).

The lease lives in the run directory (a local disk or a real S3-compatible server): a second
driver is refused with a message naming the holder's host, PID and heartbeat age; a lease
whose heartbeat is old is taken over from any host; one of a dead process on this host at
once; ``force`` breaks a live one; the live driver's heartbeat advances; of many contenders
for a stale lease exactly one wins; ``sweep status`` tells a live driver from a dead one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from arnas_ray.cli import main
from arnas_ray.errors import LockError
from arnas_ray.results.rundir import LEASE, SPEC, RunDir
from arnas_ray.sweep.lease import Lease, read_lease

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["local", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "run")
    return request.getfixturevalue("s3").uri(f"lease-{uuid.uuid4().hex[:8]}/run")


def _write(rd: RunDir, *, host: str, pid: int, age_s: float, owner: str = "someone-else") -> None:
    now = time.time()
    rd.write_text(LEASE, json.dumps({"owner": owner, "host": host, "pid": pid, "started": now - age_s - 5,
                                     "heartbeat": now - age_s}))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has this PID now (until it is reused)


def _holder(location: str) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import time
        from arnas_ray.results.rundir import RunDir
        from arnas_ray.sweep.lease import Lease
        with Lease(RunDir.open({location!r}), heartbeat_s=0.5, ttl_s=30):
            print("HELD", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "HELD"  # type: ignore[union-attr]
    return proc


def test_second_driver_is_refused_naming_the_holder(location: str) -> None:
    proc = _holder(location)
    rd = RunDir.open(location)
    try:
        with pytest.raises(LockError) as info:
            Lease(rd).acquire()
        msg = str(info.value)
        assert f"pid {proc.pid}" in msg and f"host {socket.gethostname()}" in msg and rd.uri in msg
        assert "heartbeat" in msg and "s ago" in msg and "--force" in msg
        assert read_lease(rd).pid == proc.pid  # untouched
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    # the killed driver's lease stays behind; on its own host its dead PID is detected at once
    with Lease(rd) as lease:
        assert lease.held and read_lease(rd).owner == lease.info.owner
    assert read_lease(rd) is None


def test_other_host_old_heartbeat_is_taken_over_fresh_one_is_refused(location: str,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    rd = RunDir.open(location)
    _write(rd, host="old-head.example", pid=4242, age_s=15)
    with pytest.raises(LockError, match=r"host old-head\.example, pid 4242, heartbeat 1[5-9] s ago"):
        Lease(rd, ttl_s=60).acquire()
    _write(rd, host="old-head.example", pid=4242, age_s=120)  # the head was replaced long ago
    with caplog.at_level(logging.WARNING), Lease(rd, ttl_s=60) as lease:
        assert lease.held and read_lease(rd).host == socket.gethostname()
    assert "taking over the lease" in caplog.text and "old-head.example" in caplog.text


def test_force_breaks_a_live_lease_and_the_old_holder_notices(location: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    rd = RunDir.open(location)
    first = Lease(rd, heartbeat_s=0.2, ttl_s=30).acquire()
    try:
        with caplog.at_level(logging.WARNING):
            second = Lease(rd, force=True, heartbeat_s=0.2, ttl_s=30).acquire()
        assert "--force: breaking the live-looking lease" in caplog.text
        deadline = time.time() + 10
        while not first.lost and time.time() < deadline:
            time.sleep(0.1)
        assert first.lost  # its next heartbeat saw another owner
        first.release()  # and it does not remove the new holder's lease
        assert read_lease(rd).owner == second.info.owner
        second.release()
    finally:
        first.release()
    assert read_lease(rd) is None


def test_heartbeat_advances_while_held(location: str) -> None:
    rd = RunDir.open(location)
    with Lease(rd, heartbeat_s=0.2, ttl_s=5) as lease:
        beat0 = read_lease(rd).heartbeat
        time.sleep(1.2)
        beat1 = read_lease(rd).heartbeat
        assert beat1 > beat0 and not lease.lost


@pytest.mark.parametrize("round_", range(3))
def test_one_winner_among_contenders_for_a_stale_lease(tmp_path: Path, round_: int) -> None:
    """Eight threads race to take over one stale lease: exactly one holds it at the end."""
    rd = RunDir.open(tmp_path / "run")
    _write(rd, host="gone.example", pid=1, age_s=3600)
    start = threading.Barrier(8)
    won: list[Lease] = []
    lost: list[LockError] = []

    def contend() -> None:
        lease = Lease(rd, heartbeat_s=0.5, ttl_s=30)
        start.wait()
        try:
            won.append(lease.acquire())
        except LockError as exc:
            lost.append(exc)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert len(won) == 1 and len(lost) == 7, (won, lost)
        assert read_lease(rd).owner == won[0].info.owner
    finally:
        for lease in won:
            lease.release()


def test_status_tells_a_live_driver_from_a_dead_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rd = RunDir.open(tmp_path / "run")
    rd.write_text(SPEC, "name: run\n")
    _write(rd, host="head-1.example", pid=77, age_s=2)
    assert main(["sweep", "status", rd.uri]) == 0
    assert "driver: running (host head-1.example, pid 77, heartbeat 2 s ago)" in capsys.readouterr().out
    _write(rd, host="head-1.example", pid=77, age_s=600)
    assert main(["sweep", "status", rd.uri]) == 0
    out = capsys.readouterr().out
    assert "driver: not running (last heartbeat 600 s ago from host head-1.example" in out
    _write(rd, host=socket.gethostname(), pid=_dead_pid(), age_s=1)  # SIGKILLed just now, here
    assert main(["sweep", "status", rd.uri]) == 0
    assert "driver: not running (its driver, pid" in capsys.readouterr().out
