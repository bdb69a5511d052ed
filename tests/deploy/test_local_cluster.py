"""A real three-node Ray cluster on this machine: `cluster/local_cluster.py` and `local.sh`.

Every Ray client runs in a subprocess, so this process never imports ray and the token
settings of one client cannot leak into another.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]


def _load_local_cluster():
    spec = importlib.util.spec_from_file_location(
        "arnas_local_cluster", ROOT / "cluster" / "local_cluster.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lc = _load_local_cluster()

DRIVER = textwrap.dedent(
    """
    import json, os, sys
    import ray
    try:
        ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR")
    except Exception as err:
        print(json.dumps({"connected": False, "error": type(err).__name__,
                          "message": str(err), "cause": repr(err.__cause__)}))
        sys.exit(0)

    @ray.remote(num_cpus=1)
    def where():
        return ray.get_runtime_context().get_node_id()

    done = ray.get([where.remote() for _ in range(3)])
    nodes = [{"alive": n["Alive"], "ip": n["NodeManagerAddress"], "id": n["NodeID"]}
             for n in ray.nodes()]
    print(json.dumps({"connected": True, "nodes": nodes, "task_nodes": done,
                      "cpus": ray.cluster_resources().get("CPU")}))
    """
)


def _base_env(tmp_home: Path) -> dict[str, str]:
    """The test environment without any Ray auth or address setting, and a HOME that holds
    no ~/.ray/auth_token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_home)
    return env


def _run_driver(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str]) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1]), err


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture()
def sentinel():
    """A non-Ray process whose command line names Ray daemons, as `ray stop` matches them:
    a name-based stop would kill it, the recorded-pid stop must not."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)",
         "ray/dashboard/dashboard.py", "raylet", "gcs_server", "ray start --head"],
        start_new_session=True,
    )
    yield proc
    proc.kill()
    proc.wait()


def test_three_node_cluster_with_token_auth(tmp_path, sentinel):
    state = tmp_path / "state"
    home = tmp_path / "home"
    home.mkdir()
    cluster = lc.LocalCluster(state)
    cluster.start(n_workers=2, cpus=1, timeout_s=120)
    try:
        # State: the token is private, the addresses are loopback.
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert stat.S_IMODE(cluster.token_path.stat().st_mode) == 0o600
        assert len(cluster.token) == 64 and int(cluster.token, 16) >= 0
        assert cluster.address.startswith("127.0.0.1:")
        assert cluster.dashboard_url.startswith("http://127.0.0.1:")
        nodes = cluster.nodes()
        assert [n.role for n in nodes] == ["head", "worker-1", "worker-2"]
        # Each node is its own session and process-group leader.
        for node in nodes:
            assert os.getpgid(node.pid) == node.pid
            assert os.getsid(node.pid) == node.pid
        # No node process carries the token in its environment (they read the file).
        head_env = psutil.Process(nodes[0].pid).environ()
        assert "RAY_AUTH_TOKEN" not in head_env
        assert head_env["RAY_AUTH_TOKEN_PATH"] == str(cluster.token_path)

        # Three clients at once: with the token, without any token, with a wrong token.
        fast_fail = {"RAY_gcs_server_port_wait_time_s": "2"}
        good = _run_driver({**_base_env(home), **cluster.client_env()})
        no_token = _run_driver({**_base_env(home), "RAY_ADDRESS": cluster.address, **fast_fail})
        wrong = _run_driver(
            {**_base_env(home), **cluster.client_env(), "RAY_AUTH_TOKEN": "0" * 64, **fast_fail}
        )

        # The dashboard (Jobs API) refuses requests without the token.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{cluster.dashboard_url}/api/version", timeout=10)
        assert refused.value.code in (401, 403)
        request = urllib.request.Request(
            f"{cluster.dashboard_url}/api/version",
            headers={"Authorization": f"Bearer {cluster.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["ray_version"] == "2.60.0"

        ok, _ = _result(good)
        assert ok["connected"], ok
        assert len(ok["nodes"]) == 3
        assert all(n["alive"] for n in ok["nodes"])
        # Ray 2.60 rewrites a loopback --node-ip-address to the host's routable IP on Linux;
        # every node advertises the same address, the one the cluster recorded.
        assert {n["ip"] for n in ok["nodes"]} == {cluster.node_ip}
        assert ok["cpus"] == 3.0
        assert set(ok["task_nodes"]) <= {n["id"] for n in ok["nodes"]}

        for client in (no_token, wrong):
            denied, stderr = _result(client)
            assert not denied["connected"], denied
            assert denied["error"] == "ConnectionError"
            assert "Unauthenticated" in stderr and "InvalidAuthToken" in stderr, stderr[-2000:]

        # Stop: every recorded process group and its descendants, nothing else.
        before = {}
        for node in nodes:
            for proc in psutil.process_iter():
                try:
                    if os.getpgid(proc.pid) == node.pid:
                        before[proc.pid] = node.role
                except (ProcessLookupError, psutil.NoSuchProcess):
                    continue
            before.update(
                (c.pid, node.role) for c in psutil.Process(node.pid).children(recursive=True)
            )
        assert len(before) > 3 * 3  # gcs, raylet, agents, ... besides the three leaders
        temp_dir = Path((state / "temp_dir").read_text().strip())
    except BaseException:
        cluster.stop()
        raise
    signalled = cluster.stop()
    assert set(n.pid for n in nodes) <= set(signalled)
    assert set(signalled) <= set(before) | {p for p in signalled if _gone(p)}
    assert all(_gone(pid) for pid in before), [p for p in before if not _gone(p)]
    assert sentinel.poll() is None, "stop() killed a process it did not start"
    assert not state.exists()
    assert not temp_dir.exists()
    assert cluster.nodes() == [] and not cluster.is_running()


def test_failed_worker_start_cleans_up(tmp_path, monkeypatch):
    """The head comes up, the worker's `ray start` fails: start() raises and stops the head."""
    fake_ray = tmp_path / "ray"
    fake_ray.write_text(
        "#!/bin/sh\n"
        'case "$*" in *--head*) exec "$REAL_RAY" "$@" ;; esac\n'
        "echo 'worker refuses to start' >&2\nexit 3\n"
    )
    fake_ray.chmod(0o755)
    monkeypatch.setenv("REAL_RAY", lc._ray_executable())
    state = tmp_path / "state"
    cluster = lc.LocalCluster(state, ray_executable=str(fake_ray))
    recorded = []
    original_spawn = cluster._spawn

    def spawn(role, args):
        proc = original_spawn(role, args)
        recorded.append(proc.pid)
        return proc

    cluster._spawn = spawn
    with pytest.raises(lc.ClusterError, match="worker-1 exited with code 3"):
        cluster.start(n_workers=1, cpus=1)
    assert len(recorded) == 2
    assert all(_gone(pid) for pid in recorded)
    assert not state.exists()


def test_start_refuses_a_foreign_state_dir(tmp_path):
    (tmp_path / "notes.txt").write_text("not cluster state")
    with pytest.raises(lc.ClusterError, match="holds other files"):
        lc.LocalCluster(tmp_path).start(n_workers=0)
    assert (tmp_path / "notes.txt").exists()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_workers": -1}, "n_workers"),
        ({"cpus": 0}, "cpus"),
        ({"object_store_mb": 10}, "object_store_mb"),
    ],
)
def test_start_checks_arguments(tmp_path, kwargs, field):
    with pytest.raises(lc.ClusterError, match=f"{field}="):
        lc.LocalCluster(tmp_path / "state").start(**kwargs)
    assert not (tmp_path / "state").exists()


def test_shell_script_usage_and_status(tmp_path):
    env = {**os.environ, "ARNAS_CLUSTER_DIR": str(tmp_path / "none")}
    script = ROOT / "cluster" / "local.sh"
    usage = subprocess.run([str(script), "bogus"], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    status = subprocess.run([str(script), "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 1 and "no cluster state" in status.stdout
    stop = subprocess.run([str(script), "stop"], env=env, capture_output=True, text=True)
    assert stop.returncode == 0 and "no cluster state" in stop.stdout


def test_stop_ignores_a_recycled_pid(tmp_path):
    """A pids line whose pid now belongs to another process (different start time) is not
    signalled."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        state = tmp_path / "state"
        state.mkdir()
        start_time = psutil.Process(other.pid).create_time()
        (state / "pids").write_text(lc.NodeProcess(other.pid, start_time - 100, "head").line())
        assert lc.LocalCluster(state).stop(grace_s=1) == []
        assert other.poll() is None
        assert not state.exists()
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
