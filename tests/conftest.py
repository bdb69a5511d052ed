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


class S3Server:
    """A real S3-compatible HTTP server on 127.0.0.1 (moto), for object-storage tests.

    ``uri(prefix)`` is a storage URI for arnas-ray (``s3://BUCKET/PREFIX?endpoint_override=...``),
    ``fs`` pyarrow's own S3 client on it, ``keys(prefix)`` the object keys below a prefix;
    ``stop()`` / ``start()`` take the server down and bring it back on the same port with the
    same objects (an outage)."""

    BUCKET = "arnas-test"

    def __init__(self) -> None:
        import socket

        from moto.server import ThreadedMotoServer

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server_cls = ThreadedMotoServer
        self._server = None
        self.start()
        import pyarrow.fs as pafs

        self.fs = pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http", region="us-east-1",
                                    allow_bucket_creation=True)
        self.fs.create_dir(self.BUCKET)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server = self._server_cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def uri(self, prefix: str) -> str:
        return f"s3://{self.BUCKET}/{prefix}?endpoint_override={self.endpoint}&scheme=http&region=us-east-1"

    def keys(self, prefix: str) -> list[str]:
        import pyarrow.fs as pafs

        base = f"{self.BUCKET}/{prefix}".rstrip("/")
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return sorted(i.path[len(base) + 1:] for i in infos if i.type == pafs.FileType.File)


#: dummy credentials of the S3 test server, set by the `s3` fixture only (inherited by the Ray
#: instances the tests start afterwards, and by their workers)
S3_ENV = {"AWS_ACCESS_KEY_ID": "arnas-test", "AWS_SECRET_ACCESS_KEY": "arnas-test",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def s3():
    """The session's S3 test server (see :class:`S3Server`); each test uses its own prefix."""
    import logging

    pytest.importorskip("moto")
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
