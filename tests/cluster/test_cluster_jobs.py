"""Sweeps submitted with `arnas-ray sweep submit` to a real three-node Ray cluster on this
machine (a head without CPUs and two workers with 2 CPUs and one logical GPU each, each a
separate `ray start` with token auth): a sweep spread over both workers, refused submissions,
the paper's spec submitted from a machine without its data (its trials fail on the nodes
without it; the job is FAILED), and a worker node killed under a running search trial whose
checkpoints live in an S3 bucket (moto on 127.0.0.1).

The CLI runs in subprocesses (the real `arnas-ray` console script), so this process never
imports ray. Every process the tests start is stopped by PID: the cluster by `LocalCluster.stop`
(recorded process groups), the CLI by `subprocess.run(timeout=...)`.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from arnas_ray.results import read_table

from .conftest import ARNAS, ROOT, TINY

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]


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


@pytest.mark.timeout(420)
def test_submitted_sweep_runs_on_both_workers(cluster, client_env, tmp_path):
    storage = tmp_path / "runs"
    spec = _spec(tmp_path, "spread",
                 grid={"placement": ["arnas", "robust-first"],
                       "channel_ratios": [[1, 2, 2], [1, 2, 4]], "equal_width": True})
    env = {**client_env, "RAY_AUTH_TOKEN": cluster.token}
    sub = _cli(["sweep", "submit", str(spec), "--address", cluster.dashboard_url,
                "--storage", str(storage), "--with-source", "--wait", "--timeout", "300"],
               env, timeout=360)
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


def test_paper_spec_submitted_without_its_data_fails_on_the_nodes(cluster, client_env, tmp_path, s3):
    """The submitting machine has no /data/cifar10: a warning, not an error; each trial checks
    the root on its own node and fails naming node and path; the job ends FAILED."""
    from arnas_ray.results.rundir import RunDir

    paper = ROOT / "examples" / "cifar10_paper.yaml"
    assert not Path("/data/cifar10").exists()
    prefix = f"paper-{tmp_path.name}"
    env = {**client_env, "RAY_AUTH_TOKEN": cluster.token}
    sub = _cli(["sweep", "submit", str(paper), "--address", cluster.dashboard_url, "--storage", s3.uri(prefix),
                "--with-source", "--wait", "--timeout", "240"], env, timeout=300)
    assert "warning: dataset.root: '/data/cifar10' does not exist on this machine" in sub.stderr
    assert sub.returncode == 1 and sub.stdout.split()[1] == "FAILED", sub.stdout + sub.stderr[-3000:]
    assert "no search trial finished (1 of 1 failed): see sweep status" in sub.stderr  # the log's tail
    row = RunDir.for_sweep(s3.uri(prefix), "cifar10-paper").read_table().iloc[0]
    assert row["status"] == "failed", row.to_dict()
    assert row["error"].startswith("TrialSetupError: data set root '/data/cifar10' (cifar10) does not exist on node ")
