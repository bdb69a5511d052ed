"""Submit sweeps to a remote Ray cluster through the Ray Jobs API, and follow them.

A submitted sweep is a Ray job whose entrypoint runs the ordinary pipeline on the cluster::

    python -m arnas_ray sweep run spec.yaml --address auto --storage STORAGE

The spec travels in the job's runtime environment: a temporary ``working_dir`` holding only
``spec.yaml`` (validated here first, so a bad spec is never submitted). With
``with_source=True`` the local ``arnas_ray`` package travels too (``py_modules``), for clusters
whose image has the dependencies (torch, ray, ...) but not this package. The job's driver runs
on the head node; trials run wherever Tune places them, so ``STORAGE`` must be reachable from
every node: an object-store URI (``s3://BUCKET/PREFIX``, ``gs://BUCKET/PREFIX``, credentials
from the nodes' instance profile or service account) or a directory every node sees at the
same path (NFS, EFS, Filestore).

Token authentication (Ray 2.52+, ``RAY_AUTH_MODE=token``): the dashboard, which serves the
Jobs API, answers 401 to a request without ``Authorization: Bearer TOKEN`` and 403 to a
wrong token. Ray's own client adds the header only when ``RAY_AUTH_MODE=token`` is set in the
client's environment; this module always sends it when a token is found (see
:func:`resolve_token`), so ``RAY_AUTH_TOKEN`` or a token file alone is enough.

Example:
    >>> from arnas_ray.sweep import load_spec
    >>> from arnas_ray.sweep.jobs import submit_sweep, wait_for_job
    >>> job = submit_sweep(load_spec("sweep.yaml"), "http://head:8265",
    ...                    storage="/shared/runs")  # doctest: +SKIP
    >>> wait_for_job("http://head:8265", job)  # doctest: +SKIP
    'SUCCEEDED'
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arnas_ray.errors import ArnasError, SpecError
from arnas_ray.results.rundir import display_location
from arnas_ray.sweep.spec import SweepSpec

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

__all__ = [
    "ADDRESS_ENV",
    "TERMINAL_STATES",
    "ClusterAuthError",
    "JobsError",
    "Submission",
    "connect",
    "follow_job_logs",
    "job_logs",
    "job_status",
    "resolve_token",
    "runtime_env_for",
    "submit_sweep",
    "sweep_entrypoint",
    "wait_for_job",
]

#: environment variable Ray's own ``ray job`` CLI reads for the Jobs API address
ADDRESS_ENV = "RAY_API_SERVER_ADDRESS"
TERMINAL_STATES: tuple[str, ...] = ("SUCCEEDED", "FAILED", "STOPPED")
SPEC_NAME = "spec.yaml"
_PACKAGE_EXCLUDES = ["__pycache__", "*.pyc", "*.egg-info"]


class JobsError(ArnasError, RuntimeError):
    """The Jobs API cannot be reached, does not know a job, or refused a request."""


class ClusterAuthError(JobsError, PermissionError):
    """The cluster requires a token and none, or a wrong one, was given."""


@dataclass(frozen=True)
class Submission:
    """What :func:`submit_sweep` sent.

    Attributes:
        job_id: Ray's submission id (``raysubmit_...`` unless one was chosen).
        address: The Jobs API URL.
        entrypoint: The shell command the job runs on the head node.
        run_dir: Where the run directory will be, as the cluster sees it.
    """

    job_id: str
    address: str
    entrypoint: str
    run_dir: str


def resolve_token(
    token_file: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
) -> tuple[str | None, str]:
    """Find the cluster token the way Ray does, with an explicit file first.

    The order is: ``token_file``; ``$RAY_AUTH_TOKEN``; the file ``$RAY_AUTH_TOKEN_PATH``;
    ``~/.ray/auth_token``. Surrounding whitespace is stripped.

    Args:
        token_file: A file holding the token (``--token-file``).
        environ: The environment to read (default ``os.environ``).
        home: The home directory (default ``Path.home()``).

    Returns:
        ``(token, source)``: the token or None, and where it came from (for messages).

    Raises:
        SpecError: ``token_file`` or ``$RAY_AUTH_TOKEN_PATH`` is missing or empty.
    """
    env = os.environ if environ is None else environ
    if token_file is not None:
        return _read_token(Path(token_file), "token_file"), f"--token-file {token_file}"
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return env["RAY_AUTH_TOKEN"].strip(), "$RAY_AUTH_TOKEN"
    if env.get("RAY_AUTH_TOKEN_PATH"):
        path = Path(env["RAY_AUTH_TOKEN_PATH"])
        return _read_token(path, "RAY_AUTH_TOKEN_PATH"), f"$RAY_AUTH_TOKEN_PATH ({path})"
    default = Path(home if home is not None else Path.home()) / ".ray" / "auth_token"
    if default.is_file():
        return _read_token(default, "~/.ray/auth_token"), str(default)
    return None, "no token"


def _read_token(path: Path, field: str) -> str:
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise SpecError(field, f"token file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise SpecError(field, f"cannot read token file {str(path)!r}: {exc.strerror}") from None
    if not token:
        raise SpecError(field, f"token file {str(path)!r} is empty")
    return token


def _check_address(address: str | None) -> str:
    if not address:
        raise SpecError("address", f"give the Jobs API URL (http://HEAD:8265) with --address or "
                                   f"${ADDRESS_ENV}")
    if not address.startswith(("http://", "https://")):
        raise SpecError("address", f"expected the dashboard's Jobs API URL http(s)://HOST:PORT "
                                   f"(default port 8265), got {address!r}")
    return address.rstrip("/")


def connect(address: str | None, *, token: str | None = None,
            token_source: str = "the given token") -> JobSubmissionClient:
    """A ``JobSubmissionClient`` for ``address`` that sends ``token`` as a bearer token.

    Args:
        address: The Jobs API URL, ``http://HOST:8265``.
        token: The cluster's auth token, or None for a cluster without token auth.
        token_source: Where the token came from, named in the error if it is refused.

    Raises:
        SpecError: ``address`` is not an http(s) URL.
        ClusterAuthError: The cluster requires a token and none was given, or refused it.
        JobsError: Nothing answers at ``address``.
    """
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    url = _check_address(address)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        # the constructor already calls /api/version: auth and reachability fail here
        return JobSubmissionClient(url, headers=headers)
    except AuthenticationError:
        if token is None:
            raise ClusterAuthError(
                f"the Ray cluster at {url} requires an auth token and none was found; pass "
                "--token-file PATH or set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH)") from None
        raise ClusterAuthError(
            f"the Ray cluster at {url} refused the token from {token_source}: it is not this "
            "cluster's token") from None
    except ConnectionError as exc:
        raise JobsError(f"cannot reach the Ray Jobs API at {url}: {exc}") from None


#: seconds a submitted driver waits for the lease of a previous attempt (a replaced head, a
#: retried RayJob) to go stale before giving up
SUBMIT_LEASE_WAIT_S = 120


def sweep_entrypoint(storage: str, *, python: str = "python") -> str:
    """The shell command a submitted sweep runs on the head node.

    It starts in the job's working dir (which holds ``spec.yaml``), then moves to a directory
    that outlives it (``storage`` when local, else the home directory): Ray may unpack a
    runtime-env package again, or garbage-collect it, while a long job runs, and Tune resolves
    paths against the current directory (``os.path.abspath``) when a stage ends. The driver
    waits up to :data:`SUBMIT_LEASE_WAIT_S` for the lease of a previous attempt to go stale,
    so a retried job takes over the run. It exits 3 when trials failed: the job is FAILED.
    """
    where = shlex.quote(storage)
    python = shlex.quote(python)
    go = f"mkdir -p {where} && cd {where}" if "://" not in storage else 'cd "$HOME"'
    return (f'SPEC="$PWD/{SPEC_NAME}" && {go} && exec {python} -m arnas_ray sweep run "$SPEC" '
            f'--address auto --storage {where} --lease-wait {SUBMIT_LEASE_WAIT_S}')


def _package_dir() -> Path:
    # not ``arnas_ray.__file__``: a stale editable install can import the package as a
    # namespace package, whose ``__file__`` is None
    return Path(__file__).resolve().parents[1]


def runtime_env_for(workdir: str | os.PathLike[str], *, with_source: bool = False,
                    env_vars: Mapping[str, str] | None = None,
                    base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The job's runtime environment: ``base`` (``--runtime-env-json``), ``workdir`` (holding
    ``spec.yaml``) and, optionally, the local ``arnas_ray`` package as a ``py_modules`` entry.

    Args:
        workdir: Local directory uploaded as the job's ``working_dir``.
        with_source: Also upload the ``arnas_ray`` package this process imports.
        env_vars: Extra environment variables for the job's driver and trials (``--env``);
            they win over the same names in ``base``.
        base: A runtime environment to extend (``pip``, ``env_vars``, ``py_modules`` ...);
            its ``working_dir`` is refused, the spec travels in its own.
    """
    env: dict[str, Any] = dict(base or {})
    if "working_dir" in env:
        raise SpecError("runtime_env_json", "sets working_dir, which the submission uses for the spec; "
                                            "put files in py_modules instead")
    env["working_dir"] = str(workdir)
    if with_source:
        env["py_modules"] = [*env.get("py_modules", []), str(_package_dir())]
        env["excludes"] = [*env.get("excludes", []), *_PACKAGE_EXCLUDES]
    if env_vars:
        env["env_vars"] = {**dict(env.get("env_vars") or {}), **dict(env_vars)}
    return env


def _storage_for(spec: SweepSpec, storage: str | None) -> str:
    value = storage if storage is not None else spec.storage
    field = "storage" if storage is not None else "spec.storage"
    if "://" in value:
        return value  # an object store (or file:// URI) every node reaches itself
    if not Path(value).is_absolute():
        raise SpecError(field, f"{value!r} is relative; a submitted job runs in a temporary working "
                               "directory on the head node, so give an absolute path that every node "
                               "shares (--storage /shared/runs)")
    return value


def submit_sweep(
    spec: SweepSpec,
    address: str | None,
    *,
    storage: str | None = None,
    with_source: bool = False,
    token: str | None = None,
    token_source: str = "the given token",
    submission_id: str | None = None,
    env_vars: Mapping[str, str] | None = None,
    runtime_env: Mapping[str, Any] | None = None,
) -> Submission:
    """Submit ``spec`` as a Ray job that runs the whole sweep pipeline on the cluster.

    Args:
        spec: The validated sweep.
        address: The Jobs API URL, ``http://HEAD:8265``.
        storage: Parent of the run directory: an object-store URI (``s3://``, ``gs://``) or an
            absolute path every node shares (default: ``spec.storage``, which must then be
            one of those).
        with_source: Upload the local ``arnas_ray`` package (``py_modules``).
        token: The cluster's auth token (see :func:`resolve_token`).
        token_source: Where the token came from, for error messages.
        submission_id: A job id to use instead of Ray's generated one.
        env_vars: Extra environment variables for the job.
        runtime_env: A runtime environment to extend (see :func:`runtime_env_for`).

    Returns:
        The :class:`Submission`; its ``job_id`` names the job for :func:`job_status`.

    Raises:
        SpecError: ``storage`` or ``address`` is unusable (nothing is submitted).
        ClusterAuthError: The cluster refused the request's token (or its absence).
        JobsError: The Jobs API is unreachable or rejected the submission.
    """
    store = _storage_for(spec, storage)
    client = connect(address, token=token, token_source=token_source)
    entrypoint = sweep_entrypoint(store)
    with tempfile.TemporaryDirectory(prefix="arnas-submit-") as workdir:
        (Path(workdir) / SPEC_NAME).write_text(spec.to_yaml())
        try:  # the working dir is zipped and uploaded inside submit_job
            job_id = client.submit_job(
                entrypoint=entrypoint,
                runtime_env=runtime_env_for(workdir, with_source=with_source, env_vars=env_vars,
                                            base=runtime_env),
                submission_id=submission_id,
                metadata={"arnas_ray_sweep": spec.name, "storage": store},
            )
        except RuntimeError as exc:
            raise JobsError(f"the Jobs API at {client.get_address()} rejected the submission: "
                            f"{_first_line(exc)}") from None
    return Submission(job_id, client.get_address(), entrypoint, display_location(store, spec.name))




def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _job_call(client: JobSubmissionClient, job_id: str, fn: Callable[[str], Any]) -> Any:
    try:
        return fn(job_id)
    except RuntimeError as exc:
        if "404" in str(exc) or "does not exist" in str(exc):
            raise JobsError(f"no job {job_id!r} at {client.get_address()}") from None
        raise JobsError(f"the Jobs API at {client.get_address()} failed: {_first_line(exc)}") from None


def job_status(address: str | None, job_id: str, *, token: str | None = None,
               token_source: str = "the given token") -> dict[str, Any]:
    """The job's state (``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED``, ``STOPPED``),
    message, entrypoint, metadata and times (seconds since the epoch).

    Raises:
        JobsError: The job is unknown or the Jobs API unreachable.
        ClusterAuthError: The cluster refused the token.
    """
    client = connect(address, token=token, token_source=token_source)
    info = _job_call(client, job_id, client.get_job_info)
    return {
        "job_id": job_id,
        "status": str(info.status.value if hasattr(info.status, "value") else info.status),
        "message": info.message,
        "entrypoint": info.entrypoint,
        "metadata": dict(info.metadata or {}),
        "start_time": info.start_time / 1000 if info.start_time else None,
        "end_time": info.end_time / 1000 if info.end_time else None,
        "runtime_env": dict(info.runtime_env or {}),
    }


def job_logs(address: str | None, job_id: str, *, token: str | None = None,
             token_source: str = "the given token") -> str:
    """Everything the job's driver wrote to stdout and stderr so far."""
    client = connect(address, token=token, token_source=token_source)
    return str(_job_call(client, job_id, client.get_job_logs))


def follow_job_logs(address: str | None, job_id: str, write: Callable[[str], Any], *,
                    token: str | None = None, token_source: str = "the given token") -> None:
    """Stream the job's log to ``write`` as it grows, until the job ends (``ray job logs -f``)."""
    import asyncio

    client = connect(address, token=token, token_source=token_source)
    _job_call(client, job_id, client.get_job_status)  # an unknown job fails here, clearly

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(tail())


def wait_for_job(address: str | None, job_id: str, *, token: str | None = None,
                 token_source: str = "the given token", timeout_s: float = 3600.0,
                 poll_s: float = 2.0) -> str:
    """Poll until the job reaches a terminal state; return it.

    Raises:
        TimeoutError: The job is still running after ``timeout_s`` seconds (it keeps running).
    """
    client = connect(address, token=token, token_source=token_source)
    deadline = time.monotonic() + timeout_s
    while True:
        status = _job_call(client, job_id, client.get_job_status)
        name = str(status.value if hasattr(status, "value") else status)
        if name in TERMINAL_STATES:
            return name
        if time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id!r} is still {name} after {timeout_s:.0f} s")
        time.sleep(poll_s)
