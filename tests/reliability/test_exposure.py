"""Cluster exposure (issue 9, item 6; the run-directory secret grep is in test_ray_faults.py).

- the local Ray that ``run_sweep`` starts has no dashboard, or one bound to 127.0.0.1 only;
- the ``cluster/`` manifests turn Ray token auth on, take the token from a Kubernetes Secret
  (or a file copied to the nodes), bind the dashboard to 127.0.0.1 where there is no other
  gate, and hold no literal token.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def test_local_ray_binds_dashboard_to_loopback(monkeypatch):
    import ray

    from arnas_ray.sweep import pipeline

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    assert pipeline._ensure_ray(None) is True  # noqa: SLF001
    (kw,) = calls
    assert kw.get("include_dashboard") is False or kw.get("dashboard_host") == "127.0.0.1", kw
    assert kw.get("dashboard_host", "127.0.0.1") == "127.0.0.1", kw
    assert kw.get("address") in (None, "local")  # a new local instance, never a remote one


def test_existing_ray_is_reused_not_restarted(monkeypatch):
    import ray

    from arnas_ray.sweep import pipeline

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail(f"ray.init called again: {kw}"))
    assert pipeline._ensure_ray(None) is False  # noqa: SLF001


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def _walk(value: Any):
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


#: Every deployment file these checks cover; a missing one fails (it is not skipped).
CLUSTER_FILES = ("kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "aws.yaml", "gcp.yaml")


def _need(path: Path) -> Path:
    assert path.is_file(), f"{path.relative_to(CLUSTER.parent)} is missing"
    return path


def test_every_cluster_file_is_checked():
    """The manifests exist, and the secret scan below reads each of them."""
    present = {str(p.relative_to(CLUSTER)) for p in CLUSTER.rglob("*.yaml")}
    assert set(CLUSTER_FILES) <= present, sorted(present)


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_uses_token_auth_from_a_secret(name):
    path = _need(CLUSTER / "kuberay" / name)
    docs = _docs(path)
    clusters = [d for d in docs if d.get("kind") in ("RayCluster", "RayJob", "RayService")]
    assert clusters, f"no RayCluster in {path}"
    for doc in clusters:
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        auth = spec.get("authOptions", {})
        assert auth.get("mode") == "token", f"{doc['kind']} without authOptions.mode: token"
    envs = [e for d in _walk(docs) for e in d.get("env", []) if isinstance(e, dict)]
    tokens = [e for e in envs if e.get("name") == "RAY_AUTH_TOKEN"]
    assert tokens, "no container gets RAY_AUTH_TOKEN"
    for e in tokens:
        assert "value" not in e and e["valueFrom"]["secretKeyRef"]["name"], e
    modes = [e.get("value") for e in envs if e.get("name") == "RAY_AUTH_MODE"]
    assert modes and set(modes) == {"token"}
    assert not any(d.get("kind") == "Secret" for d in docs), "a Secret with a token is committed"


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_configs_use_token_auth_and_loopback_dashboard(name):
    path = _need(CLUSTER / name)
    (doc,) = _docs(path)
    head = " ".join(doc.get("head_start_ray_commands", []))
    workers = " ".join(doc.get("worker_start_ray_commands", []))
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in workers
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in head


def test_no_literal_token_in_cluster_files():
    # long hex runs other than 40-digit git commit ids, and token-like values given to a
    # token/secret/password key (placeholders such as "<...>" or "$(...)" do not match)
    hexrun = re.compile(r"(?<![0-9a-fA-F])(?:[0-9a-fA-F]{32,39}|[0-9a-fA-F]{41,})(?![0-9a-fA-F])")
    keyed = re.compile(r"(?i)(token|secret|password)[\w-]*[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9+/_=-]{20,})")
    found, scanned = [], set()
    for path in CLUSTER.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".yml", ".sh", ".py", ".md", ".json", ""):
            text = path.read_text(errors="replace")
            scanned.add(str(path.relative_to(CLUSTER)))
            found += [f"{path.name}: {m.group()[:8]}..." for m in hexrun.finditer(text)]
            found += [f"{path.name}: {m.group(1)}={m.group(2)[:6]}..." for m in keyed.finditer(text)]
    assert set(CLUSTER_FILES) <= scanned  # the scan is not vacuous
    assert found == []


def test_secret_scan_finds_a_planted_token(tmp_path, monkeypatch):
    """The scanner is not vacuous: a literal token in a manifest is reported."""
    (tmp_path / "kuberay").mkdir()
    for name in CLUSTER_FILES:
        (tmp_path / name).write_text("kind: Dummy\n")
    (tmp_path / "aws.yaml").write_text("auth_token: 'abcdefghijklmnopqrstuvwxyz0123'\n")
    monkeypatch.setattr(sys.modules[__name__], "CLUSTER", tmp_path)
    with pytest.raises(AssertionError, match="aws.yaml: token=abcdef"):
        test_no_literal_token_in_cluster_files()
