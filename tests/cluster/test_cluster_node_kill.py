"""A worker node of a real three-node Ray cluster on this machine is killed under a running
search trial whose checkpoints live in an S3 bucket (moto on 127.0.0.1): the trial resumes on
the surviving node from its checkpoint there. Its own module (and cluster) so that pytest-xdist
runs it beside the other cluster tests (the cluster fixture is in conftest.py, the helpers in
test_cluster_jobs.py).
"""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from arnas_ray.sweep.faults import FAULTS_ENV

from .conftest import TINY
from .test_cluster_jobs import _cli, _head_and_workers, _spec

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]


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


def _s3_records(rd, trial: str) -> list[dict]:
    try:
        text = rd.read_text(f"tune/search/{trial}/result.json")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _s3_trials(rd) -> list[str]:
    return sorted({f.split("/")[2] for f in rd.list("tune/search") if f.count("/") >= 3})


@pytest.mark.timeout(600)
def test_trial_resumes_from_its_checkpoint_in_the_bucket_when_its_node_dies(cluster, client_env, tmp_path, s3):
    """It kills the worker node that runs the sweep's one search trial, once that trial has a
    checkpoint in the S3 bucket: the trial restarts on the surviving node from that checkpoint."""
    from arnas_ray.results.rundir import RunDir

    epochs = 2
    prefix = f"fault-{tmp_path.name}"
    rd = RunDir.for_sweep(s3.uri(prefix), "fault")
    spec = _spec(tmp_path, "fault",
                 search={**TINY["search"], "epochs": epochs, "steps_per_epoch": 4},
                 grid={"placement": ["arnas"], "channel_ratios": [[1, 2, 2]]},
                 resources={"cpu": 2, "gpu": 0}, max_failures=2)
    env = {**client_env, "RAY_AUTH_TOKEN": cluster.token}
    sub = _cli(["sweep", "submit", str(spec), "--address", cluster.dashboard_url, "--storage", s3.uri(prefix),
                "--env", "TUNE_GLOBAL_CHECKPOINT_S=1", "--env", f"{FAULTS_ENV}={json.dumps({'pause_s': 60})}"], env)
    assert sub.returncode == 0, sub.stderr[-3000:]
    job_id = sub.stdout.split()[0]
    head, workers = _head_and_workers(cluster)

    # the trial takes a whole worker (2 CPUs): wait for its first checkpoint in the bucket and
    # its first record there (which names the node it runs on), then kill that node. After that
    # first epoch the trial waits 60 s (the pause fault), so it surely dies mid-search; resumed
    # from that checkpoint on the other node, it does not wait again
    deadline = time.monotonic() + 300
    while True:
        trials = _s3_trials(rd)
        records = _s3_records(rd, trials[0]) if len(trials) == 1 else []
        if records and any("/checkpoint_" in f for f in rd.list("tune/search")):
            break
        if time.monotonic() > deadline:
            logs = _cli(["sweep", "logs", job_id, "--address", cluster.dashboard_url], env).stdout
            pytest.fail(f"no checkpoint and record of the trial in the bucket in time: {rd.list()}\n{logs[-4000:]}")
        time.sleep(0.5)
    trial, dead_node = trials[0], records[0]["node"]
    assert dead_node in workers, (dead_node, workers)  # never the 0-CPU head
    if records[-1].get("status") == "finished":
        pytest.fail(f"the trial finished before its node could be killed: {records}")
    assert _kill_node(cluster, workers[dead_node])

    wait = _cli(["sweep", "job-status", job_id, "--wait", "--timeout", "300",
                 "--address", cluster.dashboard_url], env, timeout=330)
    logs = _cli(["sweep", "logs", job_id, "--address", cluster.dashboard_url], env)
    assert wait.returncode == 0 and wait.stdout.strip() == "SUCCEEDED", logs.stdout[-3000:]
    assert "arnas-ray trial: trial on node" in logs.stdout  # the trials' own output reaches the job log

    # Tune's records of the trial (synced to the bucket), in order, across the failure
    assert _s3_trials(rd) == [trial]
    recs = _s3_records(rd, trial)
    nodes = [r["node"] for r in recs]
    assert nodes[0] == dead_node and nodes[-1] != dead_node and set(nodes) <= set(workers), nodes
    reported = [r["epoch"] for r in recs]  # the last epoch's report is the trial's end
    # resumed from its checkpoint in the bucket: every epoch reported once, none restarted from 1
    assert reported == list(range(1, epochs + 1)), reported
    assert recs[-1]["status"] == "finished" and recs[-1]["epoch"] == epochs
    assert [r["training_iteration"] for r in recs] == list(range(1, len(recs) + 1))

    table = rd.read_table()
    assert list(table["trial_id"]) == ["arnas_1-2-2_mgda_s2"] == [recs[-1]["trial_key"]]
    assert (table["status"] == "finished").all() and (table["epochs"] == epochs).all()
    assert table["node"].item() == nodes[-1] != dead_node
    assert not (tmp_path / "runs").exists()  # nothing on the local disk
