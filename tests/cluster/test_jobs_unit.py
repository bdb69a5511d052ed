"""`arnas_ray.sweep.jobs` and `sweep submit|logs|job-status` without a cluster: token lookup,
address and storage checks, the runtime environment, and exit 2 before anything is sent."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from arnas_ray.cli import main
from arnas_ray.errors import SpecError
from arnas_ray.sweep import SweepSpec, jobs

SPEC = {
    "name": "unit-submit",
    "storage": "runs",
    "dataset": {"name": "digits", "image_size": 8, "limit": 100},
    "search": {"channels": 4, "cells": 3, "epochs": 1, "batch_size": 16, "steps_per_epoch": 1},
    "skip_retrain": True,
}


@pytest.fixture()
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


@pytest.fixture()
def no_connect(monkeypatch):
    """Any attempt to reach a cluster fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a cluster was contacted")

    monkeypatch.setattr(jobs, "connect", refuse)


# ---------------------------------------------------------------------------------- tokens
def test_token_order(tmp_path):
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("from-home\n")
    path_file = tmp_path / "path_token"
    path_file.write_text("  from-path \n")
    explicit = tmp_path / "explicit"
    explicit.write_text("from-file")
    env = {"RAY_AUTH_TOKEN": "from-env", "RAY_AUTH_TOKEN_PATH": str(path_file)}

    assert jobs.resolve_token(explicit, environ=env, home=home)[0] == "from-file"
    assert jobs.resolve_token(None, environ=env, home=home) == ("from-env", "$RAY_AUTH_TOKEN")
    env.pop("RAY_AUTH_TOKEN")
    assert jobs.resolve_token(None, environ=env, home=home)[0] == "from-path"
    env.pop("RAY_AUTH_TOKEN_PATH")
    assert jobs.resolve_token(None, environ=env, home=home)[0] == "from-home"
    assert jobs.resolve_token(None, environ={}, home=tmp_path) == (None, "no token")


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_missing_or_empty_token_file_is_refused(tmp_path, content):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SpecError, match="token_file") as err:
        jobs.resolve_token(path, environ={}, home=tmp_path)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------- address and storage
@pytest.mark.parametrize("address", [None, "", "auto", "ray://head:10001", "head:8265"])
def test_address_must_be_the_jobs_api_url(address):
    with pytest.raises(SpecError, match="address"):
        jobs.connect(address)


def test_unreachable_address_is_a_jobs_error():
    with pytest.raises(jobs.JobsError, match="cannot reach the Ray Jobs API at http://127.0.0.1:9"):
        jobs.connect("http://127.0.0.1:9/")


@pytest.mark.parametrize(
    ("storage", "spec_storage", "match"),
    [
        (None, "runs", "spec.storage: 'runs' is relative"),
        ("rel/dir", "/abs", "storage: 'rel/dir' is relative"),
    ],
)
def test_local_storage_must_be_an_absolute_shared_path(no_connect, storage, spec_storage, match):
    spec = SweepSpec.from_dict({**SPEC, "storage": spec_storage})
    with pytest.raises(SpecError, match=match):
        jobs.submit_sweep(spec, "http://127.0.0.1:8265", storage=storage)


@pytest.mark.parametrize("uri", ["s3://bucket/runs", "gs://bucket/runs?endpoint_override=x:1"])
def test_object_store_storage_is_passed_on(uri):
    """Every node reaches an object store itself: the URI goes to the entrypoint as it is, and
    the driver starts in the home directory (the job's working dir may be unpacked again)."""
    words = shlex.split(jobs.sweep_entrypoint(uri))
    assert words[words.index("--storage") + 1] == uri and "mkdir" not in words
    assert words[:5] == ["SPEC=$PWD/spec.yaml", "&&", "cd", "$HOME", "&&"]


# ------------------------------------------------------------------- what a job carries
def test_entrypoint_runs_the_pipeline_with_the_shipped_spec():
    cmd = jobs.sweep_entrypoint("/shared/my runs")
    # the driver leaves the job's working dir (Ray may unpack it again) for the storage dir
    # a retried job (a new head) waits for the previous driver's lease to go stale
    assert shlex.split(cmd) == [
        "SPEC=$PWD/spec.yaml", "&&", "mkdir", "-p", "/shared/my runs", "&&", "cd",
        "/shared/my runs", "&&", "exec", "python", "-m", "arnas_ray", "sweep", "run", "$SPEC",
        "--address", "auto", "--storage", "/shared/my runs", "--lease-wait", str(jobs.SUBMIT_LEASE_WAIT_S)]


def test_entrypoint_runs_in_a_shell(tmp_path):
    """Run the entrypoint with a fake `python` that prints its arguments and directory."""
    import subprocess

    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$PWD"; for a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    work = tmp_path / "work dir"
    work.mkdir()
    storage = tmp_path / "shared runs"
    out = subprocess.run(["/bin/sh", "-c", jobs.sweep_entrypoint(str(storage), python=str(fake))],
                         cwd=work, capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == [str(storage), "-m", "arnas_ray", "sweep", "run", str(work / "spec.yaml"),
                   "--address", "auto", "--storage", str(storage), "--lease-wait", str(jobs.SUBMIT_LEASE_WAIT_S)]


def test_runtime_env(tmp_path):
    assert jobs.runtime_env_for(tmp_path) == {"working_dir": str(tmp_path)}
    env = jobs.runtime_env_for(tmp_path, with_source=True, env_vars={"OMP_NUM_THREADS": "1"})
    package = Path(env["py_modules"][0])
    assert (package / "__init__.py").is_file() and package.name == "arnas_ray"
    assert (package / "sweep" / "jobs.py").is_file()
    assert "__pycache__" in env["excludes"]
    assert env["env_vars"] == {"OMP_NUM_THREADS": "1"}


def test_submit_sends_the_spec_and_entrypoint(monkeypatch, tmp_path):
    """submit_sweep hands JobSubmissionClient.submit_job a working dir holding spec.yaml."""
    seen = {}

    class FakeClient:
        def get_address(self):
            return "http://head:8265"

        def submit_job(self, *, entrypoint, runtime_env, submission_id, metadata):
            workdir = Path(runtime_env["working_dir"])
            seen.update(entrypoint=entrypoint, runtime_env=runtime_env, metadata=metadata,
                        files=sorted(p.name for p in workdir.iterdir()),
                        spec=yaml.safe_load((workdir / "spec.yaml").read_text()),
                        submission_id=submission_id)
            return submission_id or "raysubmit_x"

    def fake_connect(address, *, token=None, token_source=""):
        seen["token"] = token
        return FakeClient()

    monkeypatch.setattr(jobs, "connect", fake_connect)
    spec = SweepSpec.from_dict(SPEC)
    sub = jobs.submit_sweep(spec, "http://head:8265", storage="/shared/runs", token="t0k",
                            submission_id="my-job")
    assert sub == jobs.Submission("my-job", "http://head:8265", sub.entrypoint,
                                  "/shared/runs/unit-submit")
    assert seen["token"] == "t0k"
    assert seen["files"] == ["spec.yaml"]
    assert SweepSpec.from_dict(seen["spec"]) == spec
    assert "py_modules" not in seen["runtime_env"]
    assert seen["metadata"] == {"arnas_ray_sweep": "unit-submit", "storage": "/shared/runs"}
    assert shlex.split(seen["entrypoint"])[-4:-2] == ["--storage", "/shared/runs"]
    assert sub.entrypoint == seen["entrypoint"]
    assert not Path(seen["runtime_env"]["working_dir"]).exists()  # temp dir removed


# ------------------------------------------------------------------------------ the CLI
def test_cli_bad_spec_exits_2_and_submits_nothing(tmp_path, no_connect, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "search": {**SPEC["search"], "epochs": 0}}))
    code = main(["sweep", "submit", str(bad), "--address", "http://127.0.0.1:9",
                 "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("arnas-ray: error: ") and "epochs" in err and len(err.splitlines()) == 1


def test_cli_relative_storage_exits_2(spec_file, no_connect, capsys):
    assert main(["sweep", "submit", str(spec_file), "--address", "http://127.0.0.1:9"]) == 2
    assert "is relative" in capsys.readouterr().err


def test_cli_needs_an_address(spec_file, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(jobs.ADDRESS_ENV, raising=False)
    code = main(["sweep", "submit", str(spec_file), "--storage", str(tmp_path)])
    assert code == 2
    assert "RAY_API_SERVER_ADDRESS" in capsys.readouterr().err


def test_cli_missing_token_file_exits_2(spec_file, tmp_path, no_connect, capsys):
    code = main(["sweep", "job-status", "raysubmit_x", "--address", "http://127.0.0.1:9",
                 "--token-file", str(tmp_path / "nope")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_names_do_not_clash(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    out = capsys.readouterr().out
    for name in ("run", "validate", "resume", "status", "stop", "submit", "logs", "job-status"):
        assert name in out


def test_submit_options_extend_the_runtime_env(monkeypatch, tmp_path):
    """--env and --runtime-env-json as `ray job submit` has them; bad ones exit 2 with one line."""
    seen = {}

    class FakeClient:
        def get_address(self):
            return "http://head:8265"

        def submit_job(self, *, entrypoint, runtime_env, submission_id, metadata):
            seen["runtime_env"] = runtime_env
            return "raysubmit_x"

    monkeypatch.setattr(jobs, "connect", lambda address, *, token=None, token_source="": FakeClient())
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    args = ["sweep", "submit", str(spec_file), "--address", "http://head:8265", "--storage", "s3://b/runs"]
    assert main([*args, "--env", "A=1", "--env", "B=x=y", "--runtime-env-json",
                 '{"pip": ["einops"], "env_vars": {"A": "0", "C": "2"}}']) == 0
    env = seen["runtime_env"]
    assert env["pip"] == ["einops"] and env["env_vars"] == {"A": "1", "B": "x=y", "C": "2"}
    assert main([*args, "--env", "NOEQUALS"]) == 2
    assert main([*args, "--runtime-env-json", "[1, 2]"]) == 2
    assert main([*args, "--runtime-env-json", '{"working_dir": "/x"}']) == 2
