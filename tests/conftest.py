"""Shared test settings: deterministic, single-threaded torch (the CI machine has 2 cores and
several test processes may share them), and the `gpu` marker skip."""

from __future__ import annotations

import os
import secrets

import pytest

# Ray 2.60 runs local instances with token auth and caches the token in the driver process at
# its first ray.init. Every in-process Ray instance of the test session must therefore use one
# token: fix it here, before any test starts Ray. It is recognisable, so tests can also grep
# run directories for it (tests/reliability/test_ray_faults.py).
SESSION_TOKEN = os.environ.setdefault("RAY_AUTH_TOKEN", "arnas-secret-" + secrets.token_hex(24))


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
