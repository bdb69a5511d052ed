"""A real multi-node Ray cluster on this machine, for tests and demos.

Every node is its own ``ray start --block`` process, started in a new session so that it
leads a process group of its own; Ray's daemons (GCS, raylet, dashboard, agents) inherit that
group. The cluster keeps its state in one directory (``ARNAS_CLUSTER_DIR``, default
``/tmp/arnas-local-cluster``)::

    token      the cluster's auth token (mode 600; the directory is mode 700)
    address    GCS address for drivers, ``127.0.0.1:PORT``
    dashboard  dashboard URL, ``http://127.0.0.1:PORT`` (bound to loopback only)
    node_ip    the IP the nodes advertise (see below)
    temp_dir   Ray's ``--temp-dir`` for this cluster (sessions, logs, sockets)
    pids       one line per node: ``PID START_TIME ROLE`` (PID leads a process group)
    logs/      stdout and stderr of each ``ray start``

``stop`` signals exactly the recorded process groups (plus the recorded leaders' descendants,
which covers Ray workers that the raylet moves into groups of their own); it never runs
``ray stop``, which would kill every Ray process of the user on this machine.

Facts about Ray 2.60 on Linux that shape this file (checked by hand, not guessed):

* ``ray start --node-ip-address=127.0.0.1`` is rewritten to the host's routable IP
  (``services.resolve_ip_for_localhost``), so nodes *advertise* that IP; ``127.0.0.1:PORT``
  still reaches the GCS, and drivers given it resolve it the same way.
* GCS, raylet and agents listen on all interfaces whatever the node IP; only the dashboard
  honours ``--dashboard-host``. Token authentication is therefore what keeps other hosts out.
* With ``RAY_AUTH_MODE=token`` the nodes read the token from ``RAY_AUTH_TOKEN`` or from the
  file named by ``RAY_AUTH_TOKEN_PATH``; nodes started here use the file, so the token is not
  copied into every Ray process's environment. ``~/.ray/auth_token`` is never written.
* A client without the right token fails in ``ray.init`` with ``ConnectionError`` after the GCS
  answers ``Unauthenticated: ... InvalidAuthToken``; the dashboard answers HTTP 401/403.

Usage::

    python cluster/local_cluster.py start [N_WORKERS] [CPUS_PER_NODE]
    python cluster/local_cluster.py status
    python cluster/local_cluster.py env      # shell exports for a client
    python cluster/local_cluster.py stop

or, from Python::

    with LocalCluster(state_dir).start(n_workers=2, cpus=1) as cluster:
        subprocess.run([...], env={**os.environ, **cluster.client_env()})
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

logger = logging.getLogger(__name__)

STATE_DIR_ENV = "ARNAS_CLUSTER_DIR"
DEFAULT_STATE_DIR = "/tmp/arnas-local-cluster"
LOOPBACK = "127.0.0.1"

_STATE_FILES = ("token", "address", "dashboard", "node_ip", "temp_dir", "pids")


class ClusterError(RuntimeError):
    """A local cluster could not be started, found or stopped."""


@dataclass(frozen=True)
class NodeProcess:
    """One recorded ``ray start --block`` process: the leader of its process group.

    Attributes:
        pid: Process id, equal to the process-group id.
        start_time: ``psutil`` create time, which guards against a recycled pid.
        role: ``head`` or ``worker-<i>``.
    """

    pid: int
    start_time: float
    role: str

    def line(self) -> str:
        """Return the record as one line of the ``pids`` file."""
        return f"{self.pid} {self.start_time:.3f} {self.role}\n"

    @classmethod
    def parse(cls, line: str) -> NodeProcess:
        """Parse one line of the ``pids`` file."""
        pid, start_time, role = line.split()
        return cls(int(pid), float(start_time), role)

    def process(self) -> psutil.Process | None:
        """Return the live process this record names, or None if it is gone or recycled."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.start_time) > 0.01:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.NoSuchProcess:
            return None


def default_state_dir() -> Path:
    """Return ``$ARNAS_CLUSTER_DIR`` or ``/tmp/arnas-local-cluster``."""
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _ray_executable() -> str:
    beside = Path(sys.executable).with_name("ray")
    if beside.exists():
        return str(beside)
    found = shutil.which("ray")
    if found is None:
        raise ClusterError("no `ray` executable beside the Python interpreter or on PATH")
    return found


def _is_alive(proc: psutil.Process) -> bool:
    """True if ``proc`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait up to ``timeout_s`` for ``procs`` to exit; return those still alive."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [proc for proc in procs if _is_alive(proc)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def _group_members(node: NodeProcess) -> list[psutil.Process]:
    """Live processes in the recorded process group that started after its leader."""
    found = []
    for proc in psutil.process_iter():
        try:
            if (
                os.getpgid(proc.pid) == node.pid
                and proc.create_time() >= node.start_time - 0.01
                and _is_alive(proc)
            ):
                found.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _node_targets(
    nodes: list[NodeProcess],
    leaders: dict[int, psutil.Process | None],
    members: dict[int, list[psutil.Process]],
) -> list[psutil.Process]:
    """The processes to stop for ``nodes``: group members plus the leaders' descendants."""
    targets: dict[int, psutil.Process] = {}
    for node in nodes:
        targets.update((proc.pid, proc) for proc in members[node.pid])
        leader = leaders[node.pid]
        if leader is not None:
            targets[leader.pid] = leader
            with contextlib.suppress(psutil.NoSuchProcess):
                targets.update((c.pid, c) for c in leader.children(recursive=True))
    return list(targets.values())


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid}:{proc.name()}"
    except psutil.Error:
        return str(proc.pid)


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _tail(path: Path, n: int = 20) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


class LocalCluster:
    """A head and N workers, each a separate ``ray start`` process on this machine.

    Args:
        state_dir: Directory for the cluster's state; defaults to :func:`default_state_dir`.
        ray_executable: Path of the ``ray`` CLI; defaults to the one beside ``sys.executable``.
    """

    def __init__(
        self, state_dir: str | os.PathLike[str] | None = None, ray_executable: str | None = None
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self._ray = ray_executable

    # ------------------------------------------------------------------ state
    def _read(self, name: str) -> str:
        path = self.state_dir / name
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise ClusterError(f"no cluster state {name!r} in {self.state_dir}") from None

    @property
    def address(self) -> str:
        """GCS address for ``ray.init(address=...)`` and ``ray start --address``."""
        return self._read("address")

    @property
    def dashboard_url(self) -> str:
        """Dashboard and Jobs API URL (``http://127.0.0.1:PORT``)."""
        return self._read("dashboard")

    @property
    def token(self) -> str:
        """The cluster's auth token."""
        return self._read("token")

    @property
    def token_path(self) -> Path:
        """The file holding the token (mode 600)."""
        return self.state_dir / "token"

    @property
    def node_ip(self) -> str:
        """The IP address the nodes advertise (``NodeManagerAddress``)."""
        return self._read("node_ip")

    def nodes(self) -> list[NodeProcess]:
        """Return the recorded node processes (empty if there is no state)."""
        path = self.state_dir / "pids"
        if not path.exists():
            return []
        return [NodeProcess.parse(line) for line in path.read_text().splitlines() if line.strip()]

    def is_running(self) -> bool:
        """Return True if any recorded node process is alive."""
        return any(node.process() is not None for node in self.nodes())

    def client_env(self) -> dict[str, str]:
        """Return the environment a driver or CLI client needs to reach this cluster.

        It carries the token itself (``RAY_AUTH_TOKEN``) so that a client on another
        account or in a container needs nothing else; use :attr:`token_path` with
        ``RAY_AUTH_TOKEN_PATH`` instead to keep the token out of the environment.
        """
        return {
            "RAY_ADDRESS": self.address,
            "RAY_API_SERVER_ADDRESS": self.dashboard_url,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
        }

    def _node_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(self.token_path),
            RAY_USAGE_STATS_ENABLED="0",
            # On SIGTERM, `ray start --block` first drains its node for up to 30 s (meant for
            # Serve on Kubernetes); there is nothing to drain here, so tear down at once.
            RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        )
        # job entrypoints (`python -m arnas_ray ...`) must find the Python that runs Ray
        bin_dir = str(Path(self._ray or _ray_executable()).parent)
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
        return env

    # ------------------------------------------------------------------ start
    def start(
        self,
        n_workers: int = 2,
        cpus: int = 1,
        head_cpus: int | None = None,
        object_store_mb: int = 128,
        timeout_s: float = 60.0,
        gpus: int = 0,
    ) -> LocalCluster:
        """Start the head and ``n_workers`` workers and wait until all nodes are alive.

        Args:
            n_workers: Number of worker nodes (``>= 0``).
            cpus: ``--num-cpus`` of each worker.
            head_cpus: ``--num-cpus`` of the head; defaults to ``cpus``.
            object_store_mb: Object store size of each node in MiB (``>= 75``, Ray's minimum).
            timeout_s: Limit for the head to come up and for all nodes to register.
            gpus: ``--num-gpus`` of each worker: logical GPUs for scheduling tests (a trial
                placed on one finds no CUDA device on a machine without GPUs).

        Returns:
            self, so that ``with LocalCluster(d).start(...) as c:`` works.

        Raises:
            ClusterError: If a cluster is already running in ``state_dir``, an argument is out
                of range, or a node fails to start. Everything started so far is stopped.
        """
        if n_workers < 0:
            raise ClusterError(f"`n_workers >= 0` must hold, but got n_workers={n_workers}")
        if cpus < 1:
            raise ClusterError(f"`cpus >= 1` must hold, but got cpus={cpus}")
        if object_store_mb < 75:
            raise ClusterError(
                f"`object_store_mb >= 75` must hold, but got object_store_mb={object_store_mb}"
            )
        if self.is_running():
            raise ClusterError(
                f"a cluster is already running with state in {self.state_dir}; stop it first"
            )
        if self.state_dir.exists():
            self._remove_state()  # stale state of a cluster that is gone
            if self.state_dir.exists():
                raise ClusterError(
                    f"state dir {self.state_dir} holds other files; choose an empty directory "
                    f"with {STATE_DIR_ENV}"
                )
        try:
            self._start(n_workers, cpus, cpus if head_cpus is None else head_cpus,
                        object_store_mb, timeout_s, gpus)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(
        self, n_workers: int, cpus: int, head_cpus: int, object_store_mb: int, timeout_s: float,
        gpus: int = 0,
    ) -> None:
        self.state_dir.mkdir(parents=True, mode=0o700)
        (self.state_dir / "logs").mkdir(mode=0o700)
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        # Ray's unix socket paths must stay under ~107 bytes: keep the temp dir short.
        temp_dir = Path(tempfile.mkdtemp(prefix="arnas-ray-", dir="/tmp"))
        (self.state_dir / "temp_dir").write_text(f"{temp_dir}\n")
        dashboard_port = _free_port()
        common = [
            f"--node-ip-address={LOOPBACK}",
            f"--temp-dir={temp_dir}",
            f"--object-store-memory={object_store_mb * 1024 * 1024}",
            "--dashboard-agent-listen-port=0",  # default 52365 would clash between nodes
            "--disable-usage-stats",
            "--block",
        ]
        head = self._spawn(
            "head",
            [
                "--head",
                "--port=0",
                f"--num-cpus={head_cpus}",
                f"--dashboard-host={LOOPBACK}",
                f"--dashboard-port={dashboard_port}",
                f"--ray-client-server-port={_free_port()}",
                *common,
            ],
        )
        deadline = time.monotonic() + timeout_s
        marker = temp_dir / "ray_current_cluster"
        while not marker.exists() or not marker.read_text().strip():
            self._check_alive(head, "head")
            if time.monotonic() > deadline:
                raise ClusterError(f"head did not come up within {timeout_s} s")
            time.sleep(0.2)
        advertised = marker.read_text().strip()
        node_ip, port = advertised.rsplit(":", 1)
        (self.state_dir / "address").write_text(f"{LOOPBACK}:{port}\n")
        (self.state_dir / "node_ip").write_text(f"{node_ip}\n")
        (self.state_dir / "dashboard").write_text(f"http://{LOOPBACK}:{dashboard_port}\n")
        # One node at a time: `ray start` picks free ports in Python and hands them to the
        # raylet, so concurrent starts in one temp dir race ("bind: Address already in use").
        procs = [head]
        self._wait_for_nodes(1, procs, deadline, timeout_s)
        for i in range(1, n_workers + 1):
            procs.append(
                self._spawn(
                    f"worker-{i}",
                    [f"--address={LOOPBACK}:{port}", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
                     "--include-log-monitor=false", *common],
                )
            )
            self._wait_for_nodes(1 + i, procs, deadline, timeout_s)
        logger.info(
            "local Ray cluster up: address=%s dashboard=%s nodes=%d",
            self.address, self.dashboard_url, 1 + n_workers,
        )

    def _spawn(self, role: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.state_dir / "logs" / f"{role}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [self._ray or _ray_executable(), "start", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._node_env(),
                start_new_session=True,  # own session and process group: pgid == pid
            )
        start_time = psutil.Process(proc.pid).create_time()
        with open(self.state_dir / "pids", "a") as f:
            f.write(NodeProcess(proc.pid, start_time, role).line())
        return proc

    def _check_alive(self, proc: subprocess.Popen[bytes], role: str) -> None:
        if proc.poll() is not None:
            log = self.state_dir / "logs" / f"{role}.log"
            raise ClusterError(
                f"`ray start` of the {role} exited with code {proc.returncode}; "
                f"last lines of {log}:\n{_tail(log)}"
            )

    def alive_nodes(self) -> list[dict[str, object]]:
        """Return the nodes the dashboard reports ALIVE (authenticating with the token)."""
        request = urllib.request.Request(
            f"{self.dashboard_url}/api/v0/nodes?limit=1000&detail=true",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = json.load(response)
        nodes = body["data"]["result"]["result"]
        return [n for n in nodes if n.get("state") == "ALIVE"]

    def _wait_for_nodes(
        self,
        expected: int,
        procs: list[subprocess.Popen[bytes]],
        deadline: float,
        timeout_s: float,
    ) -> None:
        roles = [node.role for node in self.nodes()]
        seen = 0
        while True:
            for proc, role in zip(procs, roles):
                self._check_alive(proc, role)
            try:
                seen = len(self.alive_nodes())
            except (urllib.error.URLError, OSError, KeyError, ValueError):
                seen = 0  # dashboard not up yet
            if seen >= expected:
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"only {seen} of {expected} nodes alive after {timeout_s} s; "
                    f"logs in {self.state_dir / 'logs'}"
                )
            time.sleep(0.5)

    # ------------------------------------------------------------------- stop
    def stop(self, grace_s: float = 10.0) -> list[int]:
        """Stop the recorded process groups and remove the state and Ray's temp dir.

        Workers get SIGTERM first, then the head; whatever is left after ``grace_s``
        seconds gets SIGKILL. Only the recorded leaders, their process groups and their
        descendants are signalled.

        Args:
            grace_s: Seconds to wait after SIGTERM before SIGKILL.

        Returns:
            The pids that were signalled (sorted).
        """
        nodes = self.nodes()
        leaders = {node.pid: node.process() for node in nodes}
        members = {node.pid: _group_members(node) for node in nodes}
        targets = {proc.pid: proc for proc in _node_targets(nodes, leaders, members)}
        try:
            # SIGTERM to a `ray start --block` makes it stop its own daemons in order; SIGTERM
            # to the whole group instead races that and can leave the head hanging. Workers go
            # first, and the head only once they are gone: a worker raylet whose GCS vanishes
            # while it unregisters can hang until SIGKILL.
            deadline = time.monotonic() + grace_s
            alive: list[psutil.Process] = []
            for phase in ("workers", "head"):
                phase_nodes = [n for n in nodes if (n.role == "head") == (phase == "head")]
                for node in phase_nodes:
                    leader = leaders[node.pid]
                    if leader is not None:
                        _signal(leader, signal.SIGTERM)
                    else:  # leader gone: signal the surviving members one by one
                        for proc in members[node.pid]:
                            _signal(proc, signal.SIGTERM)
                phase_targets = _node_targets(phase_nodes, leaders, members)
                alive += _wait_gone(phase_targets, max(0.5, deadline - time.monotonic()))
            if alive:
                logger.warning(
                    "SIGKILL to %d processes still alive after %.0f s: %s",
                    len(alive), grace_s, sorted(_describe(p) for p in alive),
                )
            for node in nodes:
                leader = leaders[node.pid]
                if leader is not None and _is_alive(leader):
                    _signal_group(node.pid, signal.SIGKILL)
            for proc in alive:
                _signal(proc, signal.SIGKILL)
            still = _wait_gone(alive, 5.0)
        except BaseException:
            logger.error("stop interrupted; state kept in %s", self.state_dir)
            raise
        if still:
            raise ClusterError(
                f"processes {[p.pid for p in still]} survived SIGKILL; "
                f"state kept in {self.state_dir}"
            )
        self._remove_state()
        return sorted(targets)

    def _remove_state(self) -> None:
        temp_file = self.state_dir / "temp_dir"
        if temp_file.exists():
            temp_dir = Path(temp_file.read_text().strip())
            if temp_dir.name.startswith("arnas-ray-"):
                shutil.rmtree(temp_dir, ignore_errors=True)
        # Remove only what this class writes: the state dir may be a user-chosen path.
        for name in _STATE_FILES:
            (self.state_dir / name).unlink(missing_ok=True)
        shutil.rmtree(self.state_dir / "logs", ignore_errors=True)
        try:
            self.state_dir.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            logger.warning("left %s in place: it holds files this tool did not write",
                           self.state_dir)

    # -------------------------------------------------------- context manager
    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Command line: ``start [N_WORKERS] [CPUS_PER_NODE] | stop | status | env``."""
    parser = argparse.ArgumentParser(prog="local.sh", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a head and N workers on this machine")
    start.add_argument("n_workers", nargs="?", type=int, default=2)
    start.add_argument("cpus", nargs="?", type=int, default=1)
    start.add_argument("--object-store-mb", type=int, default=128)
    start.add_argument("--timeout", type=float, default=90.0)
    sub.add_parser("stop", help="stop the recorded processes and remove the state")
    sub.add_parser("status", help="show the state; exit 0 if running, 1 if not")
    sub.add_parser("env", help="print shell exports for a client of the cluster")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cluster = LocalCluster()
    out = sys.stdout
    try:
        if args.command == "start":
            cluster.start(args.n_workers, args.cpus, object_store_mb=args.object_store_mb,
                          timeout_s=args.timeout)
            out.write(
                f"state:     {cluster.state_dir}\n"
                f"address:   {cluster.address}  (nodes advertise {cluster.node_ip})\n"
                f"dashboard: {cluster.dashboard_url}\n"
                f"token:     {cluster.token_path}\n"
                f"client:    eval \"$({Path(__file__).with_name('local.sh')} env)\"\n"
            )
        elif args.command == "stop":
            if not cluster.nodes():
                out.write(f"no cluster state in {cluster.state_dir}\n")
                return 0
            pids = cluster.stop()
            out.write(f"stopped {len(pids)} processes\n")
        elif args.command == "status":
            nodes = cluster.nodes()
            if not nodes:
                out.write(f"no cluster state in {cluster.state_dir}\n")
                return 1
            out.write(f"address:   {cluster.address}\ndashboard: {cluster.dashboard_url}\n")
            for node in nodes:
                state = "alive" if node.process() is not None else "gone"
                out.write(f"{node.role:<10} pid {node.pid:<8} {state}\n")
            return 0 if cluster.is_running() else 1
        elif args.command == "env":
            for key, value in cluster.client_env().items():
                out.write(f"export {key}={value}\n")
    except ClusterError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
