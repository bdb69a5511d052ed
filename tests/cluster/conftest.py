"""The three-node cluster of the cluster tests (one per module: each module's tests share it)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARNAS = str(BIN / "arnas-ray")


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
def cluster(tmp_path_factory, s3):
    """The nodes start after the S3 fixture set its credentials: they (and the jobs' drivers
    and trials) inherit them, as instance-profile credentials reach every node of a real cluster."""
    state = tmp_path_factory.mktemp("cluster") / "state"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in NODE_ENV.items():
            mp.setenv(key, value)
        for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            mp.delenv(key, raising=False)
        c = lc.LocalCluster(state).start(n_workers=2, cpus=2, head_cpus=0, gpus=1, timeout_s=150)
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


