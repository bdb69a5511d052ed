"""``arnas-ray sweep submit|logs|job-status``: sweeps as Ray jobs on a remote cluster.

``sweep status RUN_DIR`` (a run directory on disk) already exists, so the state of a submitted
job is ``sweep job-status JOB_ID``. All three commands take ``--address`` (default
``$RAY_API_SERVER_ADDRESS``) and ``--token-file`` (default: ``$RAY_AUTH_TOKEN``,
``$RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["register"]


def _connection(args: argparse.Namespace) -> dict[str, str | None]:
    from arnas_ray.sweep.jobs import resolve_token

    token, source = resolve_token(args.token_file)
    return {"token": token, "token_source": source}


def _env_pairs(items: list[str] | None) -> dict[str, str]:
    from arnas_ray.errors import SpecError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not key.replace("_", "a").isalnum():
            raise SpecError("--env", f"expected KEY=VALUE with KEY a variable name, got {item!r}")
        out[key] = value
    return out


def _runtime_env(text: str | None) -> dict | None:
    from arnas_ray.errors import SpecError

    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SpecError("--runtime-env-json", f"is not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise SpecError("--runtime-env-json", f"expected a JSON object, got {text!r}")
    return value


def _submit(args: argparse.Namespace) -> int:
    from arnas_ray.sweep import load_spec
    from arnas_ray.sweep.jobs import submit_sweep

    spec = load_spec(args.spec)  # bad input exits 2 before anything is sent
    env_vars, base = _env_pairs(args.env), _runtime_env(args.runtime_env_json)
    for warning in spec.local_warnings():
        print(f"arnas-ray: warning: {warning}", file=sys.stderr)
    auth = _connection(args)
    sub = submit_sweep(spec, args.address, storage=args.storage, with_source=args.with_source,
                       submission_id=args.job_id, env_vars=env_vars, runtime_env=base, **auth)
    print(sub.job_id)
    print(f"submitted {spec.name!r} to {sub.address}; results in {sub.run_dir}", file=sys.stderr)
    if not args.wait:
        print(f"follow it with: arnas-ray sweep job-status {sub.job_id} --address {sub.address}",
              file=sys.stderr)
        return 0
    return _wait(args, sub.job_id, auth)


def _wait(args: argparse.Namespace, job_id: str, auth: dict[str, str | None]) -> int:
    from arnas_ray.sweep.jobs import job_logs, wait_for_job

    try:
        state = wait_for_job(args.address, job_id, timeout_s=args.timeout, **auth)
    except TimeoutError as exc:
        print(f"arnas-ray: {exc}", file=sys.stderr)
        return 1
    print(state)
    if state != "SUCCEEDED":
        tail = job_logs(args.address, job_id, **auth).splitlines()[-40:]
        print("\n".join(["last lines of the job's log:", *tail]), file=sys.stderr)
        return 1
    return 0


def _job_status(args: argparse.Namespace) -> int:
    from arnas_ray.sweep.jobs import job_status

    if args.wait:
        return _wait(args, args.job_id, _connection(args))
    info = job_status(args.address, args.job_id, **_connection(args))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    meta = info["metadata"]
    print(f"job {info['job_id']}: {info['status']}")
    if meta.get("arnas_ray_sweep"):
        print(f"sweep: {meta['arnas_ray_sweep']} (run directory under {meta.get('storage')})")
    if info["message"]:
        print(f"message: {info['message']}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    from arnas_ray.sweep.jobs import follow_job_logs, job_logs

    if args.follow:
        def write(chunk: str) -> None:
            sys.stdout.write(chunk)
            sys.stdout.flush()

        follow_job_logs(args.address, args.job_id, write, **_connection(args))
        return 0
    sys.stdout.write(job_logs(args.address, args.job_id, **_connection(args)))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS"),
                   help="Jobs API URL http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS)")
    p.add_argument("--token-file", default=None,
                   help="file holding the cluster's auth token (default: $RAY_AUTH_TOKEN, "
                        "$RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)")


def register(ssub: argparse._SubParsersAction) -> None:
    """Add ``submit``, ``logs`` and ``job-status`` to the ``sweep`` sub-commands."""
    sub = ssub.add_parser("submit", help="submit a sweep to a Ray cluster as a job (Ray Jobs API)")
    sub.add_argument("spec", help="sweep YAML (validated here; nothing is sent if it is bad)")
    _common(sub)
    sub.add_argument("--storage", default=None,
                     help="parent of the run directory, reachable from every node: s3://BUCKET/PREFIX, "
                          "gs://BUCKET/PREFIX or an absolute shared path (default: spec.storage)")
    sub.add_argument("--env", action="append", metavar="KEY=VALUE",
                     help="environment variable for the job's driver and trials (repeat)")
    sub.add_argument("--runtime-env-json", default=None, metavar="JSON",
                     help="a Ray runtime environment to extend, as `ray job submit` takes it")
    sub.add_argument("--with-source", action="store_true",
                     help="upload the local arnas_ray package too (cluster without it installed)")
    sub.add_argument("--job-id", default=None, help="submission id (default: Ray's raysubmit_...)")
    sub.add_argument("--wait", action="store_true",
                     help="wait for the job to end; exit 0 only if it SUCCEEDED")
    sub.add_argument("--timeout", type=float, default=24 * 3600.0,
                     help="seconds --wait waits (default: 1 day)")
    sub.set_defaults(func=_submit)

    logs = ssub.add_parser("logs", help="print the driver log of a submitted sweep job")
    logs.add_argument("job_id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    _common(logs)
    logs.set_defaults(func=_logs)

    st = ssub.add_parser("job-status",
                         help="state of a submitted sweep job (`sweep status` reads a run dir)")
    st.add_argument("job_id")
    _common(st)
    st.add_argument("--json", action="store_true", help="the full job info as JSON")
    st.add_argument("--wait", action="store_true", help="wait for a terminal state")
    st.add_argument("--timeout", type=float, default=24 * 3600.0,
                    help="seconds --wait waits (default: 1 day)")
    st.set_defaults(func=_job_status)
