"""Sweeps submitted with `arnas-ray sweep submit` to a real three-node Ray cluster on this
machine (a head without CPUs and two 1-CPU workers, each a separate `ray start` with token
auth): a sweep spread over both workers, refused submissions, and a worker node killed under
a running search trial.

The CLI runs in subprocesses (the real `arnas-ray` console script), so this process never
imports ray. Every process the tests start is stopped by PID: the cluster by `LocalCluster.stop`
(recorded process groups), the CLI by `subprocess.run(timeout=...)`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from arnas_ray.results import read_table

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARNAS = str(BIN / "arnas-ray")

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]


def _load_local_cluster():
    spec = importlib.util.spec_from_file_location(
        "arnas_local_cluster", ROOT / "cluster" / "local_cluster.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


lc = _load_local_cluster()

TINY = {
    "dataset": {"name": "digits", "image_size": 8, "limit": 200},
    "search": {"channels": 4, "cells": 3, "epochs": 1, "batch_size": 16, "steps_per_epoch": 2,
               "eval_samples": 32, "order": "first"},
    "resources": {"cpu": 1, "gpu": 0},
    "skip_retrain": True,
}

NODE_ENV = {
    # the job's entrypoint runs `python` from PATH on the head node: this interpreter
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    # GCS declares a silent node dead after ~3 s instead of ~30 s
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("cluster") / "state"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in NODE_ENV.items():
            mp.setenv(key, value)
        for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            mp.delenv(key, raising=False)
        c = lc.LocalCluster(state).start(n_workers=2, cpus=1, head_cpus=0, timeout_s=150)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture()
def client_env(tmp_path):
    """A CLI environment without any Ray setting, and a HOME with no ~/.ray/auth_token."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), PATH=NODE_ENV["PATH"])
    return env


def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([ARNAS, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _spec(tmp_path: Path, name: str, **overrides) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **TINY, **overrides}))
    return path


def _jobs(cluster) -> list[dict]:
    request = urllib.request.Request(f"{cluster.dashboard_url}/api/jobs/",
                                     headers={"Authorization": f"Bearer {cluster.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _head_and_workers(cluster) -> tuple[str, dict[str, str]]:
    """The head's node id, and each worker node id -> its recorded role (``worker-1``...),
    read from the ``--node_id`` of the raylet in each recorded process group."""
    roles = {}
    for node in cluster.nodes():
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if os.getpgid(proc.pid) != node.pid:
                    continue
            except ProcessLookupError:
                continue
            for arg in proc.info["cmdline"] or []:
                if arg.startswith("--node_id="):
                    roles[arg.split("=", 1)[1]] = node.role
    head = [k for k, v in roles.items() if v == "head"]
    assert len(head) == 1 and len(roles) == 3, roles
    return head[0], {k: v for k, v in roles.items() if v != "head"}


def test_submitted_sweep_runs_on_both_workers(cluster, client_env, tmp_path):
    storage = tmp_path / "runs"
    spec = _spec(tmp_path, "spread",
                 grid={"placement": ["arnas", "robust-first"],
                       "channel_ratios": [[1, 2, 2], [1, 2, 4]], "equal_width": True})
    env = {**client_env, "RAY_AUTH_TOKEN": cluster.token}
    sub = _cli(["sweep", "submit", str(spec), "--address", cluster.dashboard_url,
                "--storage", str(storage), "--with-source", "--wait", "--timeout", "180"],
               env, timeout=240)
    assert sub.returncode == 0, sub.stdout + sub.stderr[-3000:]
    job_id, state = sub.stdout.split()
    assert job_id.startswith("raysubmit_") and state == "SUCCEEDED"

    # status and logs of the job, with the token from a file this time
    auth = ["--address", cluster.dashboard_url, "--token-file", str(cluster.token_path)]
    status = _cli(["sweep", "job-status", job_id, "--json", *auth], client_env)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["status"] == "SUCCEEDED"
    assert info["metadata"] == {"arnas_ray_sweep": "spread", "storage": str(storage)}
    assert info["runtime_env"]["py_modules"][0].startswith("gcs://")  # --with-source uploaded
    logs = _cli(["sweep", "logs", job_id, *auth], client_env)
    assert logs.returncode == 0, logs.stderr
    assert f"run directory: {storage / 'spread'}" in logs.stdout, logs.stdout[-2000:]

    table = read_table(storage / "spread" / "results.parquet")
    assert sorted(table["trial_id"]) == sorted([
        "arnas_1-2-2_mgda_s2", "arnas_1-2-4_mgda_s2",
        "robust-first_1-2-2_mgda_s2", "robust-first_1-2-4_mgda_s2"])
    assert (table["stage"] == "search").all() and (table["status"] == "finished").all()
    assert table["nat_acc"].notna().all() and table["genotype"].notna().all()
    head, workers = _head_and_workers(cluster)
    assert set(table["node"]) == set(workers)  # both workers, never the 0-CPU head


def test_submission_without_or_with_a_wrong_token_is_refused(cluster, client_env, tmp_path):
    spec = _spec(tmp_path, "refused")
    before = len(_jobs(cluster))
    base = ["sweep", "submit", str(spec), "--address", cluster.dashboard_url,
            "--storage", str(tmp_path / "runs")]

    # both clients at once (each CLI start imports torch and ray: seconds on this machine)
    procs = [subprocess.Popen([ARNAS, *base], env=e, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for e in (client_env, {**client_env, "RAY_AUTH_TOKEN": "0" * 64})]
    try:
        missing, wrong = (subprocess.CompletedProcess(p.args, p.wait(120), *p.communicate())
                          for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"arnas-ray: error: the Ray cluster at {cluster.dashboard_url} requires an auth token "
        "and none was found; pass --token-file PATH or set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH)"]

    assert wrong.returncode == 2
    assert "refused the token from $RAY_AUTH_TOKEN" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1

    assert len(_jobs(cluster)) == before  # nothing was submitted
    assert not (tmp_path / "runs").exists()


def _records(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _kill_node(cluster, role: str) -> list[int]:
    """SIGKILL one recorded node: its process group and the leader's descendants (a machine
    that loses power: nothing shuts down cleanly)."""
    node = next(n for n in cluster.nodes() if n.role == role)
    procs = {}
    leader = node.process()
    assert leader is not None
    procs.update((p.pid, p) for p in leader.children(recursive=True))
    procs[leader.pid] = leader
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == node.pid:
                procs[proc.pid] = proc
        except ProcessLookupError:
            continue
    for proc in procs.values():
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(procs.values()), timeout=10)
    return sorted(procs)


@pytest.mark.timeout(600)
def test_trial_resumes_from_its_checkpoint_when_its_node_dies(cluster, client_env, tmp_path):
    """Runs last in this module: it kills worker node of the cluster."""
    epochs = 3
    storage = tmp_path / "runs"
    spec = _spec(tmp_path, "fault",
                 search={**TINY["search"], "epochs": epochs, "steps_per_epoch": 3},
                 grid={"placement": ["arnas", "robust-first"], "channel_ratios": [[1, 2, 2]]},
                 max_failures=2)
    env = {**client_env, "RAY_AUTH_TOKEN": cluster.token}
    sub = _cli(["sweep", "submit", str(spec), "--address", cluster.dashboard_url,
                "--storage", str(storage)], env)
    assert sub.returncode == 0, sub.stderr[-3000:]
    job_id = sub.stdout.split()[0]
    head, workers = _head_and_workers(cluster)

    # wait until a trial has reported its first epoch (and checkpoint) and is in its second
    experiment = storage / "fault" / "tune" / "search"
    deadline = time.monotonic() + 200
    victim = None
    while victim is None:
        assert time.monotonic() < deadline, "no trial reported an epoch in time"
        for trial_dir in sorted(experiment.glob("*/")) if experiment.exists() else []:
            recs = _records(trial_dir)
            if recs and recs[-1].get("epoch") == 1 and list(trial_dir.glob("checkpoint_*")):
                victim = trial_dir, recs[-1]["trial_key"], recs[-1]["node"]
                break
        time.sleep(0.2)
    trial_dir, key, dead_node = victim
    assert dead_node in workers
    killed = _kill_node(cluster, workers[dead_node])
    assert killed

    wait = _cli(["sweep", "job-status", job_id, "--wait", "--timeout", "300",
                 "--address", cluster.dashboard_url], env, timeout=330)
    logs = _cli(["sweep", "logs", job_id, "--address", cluster.dashboard_url], env)
    assert wait.returncode == 0 and wait.stdout.strip() == "SUCCEEDED", logs.stdout[-3000:]

    # the killed trial: Tune's records of it, in order, across the failure
    recs = _records(trial_dir)
    nodes = [r["node"] for r in recs]
    assert nodes[0] == dead_node and nodes[-1] != dead_node, nodes  # it moved to the survivor
    assert set(nodes) <= set(workers)
    running = [r["epoch"] for r in recs if r["status"] == "running"]
    # resumed from its checkpoint: every epoch reported once, none restarted from 1
    assert running == list(range(1, epochs + 1)), running
    assert recs[-1]["status"] == "finished" and recs[-1]["epoch"] == epochs
    # Tune's iteration counter continued across the restore as well
    assert [r["training_iteration"] for r in recs] == list(range(1, len(recs) + 1))

    table = read_table(storage / "fault" / "results.parquet")
    assert sorted(table["trial_id"]) == ["arnas_1-2-2_mgda_s2", "robust-first_1-2-2_mgda_s2"]
    assert key in set(table["trial_id"])
    assert not table.duplicated(["stage", "trial_id"]).any()
    assert (table["status"] == "finished").all() and (table["epochs"] == epochs).all()
    assert table.loc[table["trial_id"] == key, "node"].item() != dead_node
