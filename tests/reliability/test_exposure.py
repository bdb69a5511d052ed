"""Cluster exposure (issue 9, item 6; the run-directory secret grep is in test_ray_faults.py).

- the local Ray that ``run_sweep`` starts has no dashboard, or one bound to 127.0.0.1 only;
- the ``cluster/`` manifests turn Ray token auth on, take the token from a Kubernetes Secret
  (or a file copied to the nodes), bind the dashboard to 127.0.0.1 where there is no other
  gate, and hold no literal token.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def test_local_ray_binds_dashboard_to_loopback(monkeypatch):
    ray = pytest.importorskip("ray")
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
    ray = pytest.importorskip("ray")
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


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path.relative_to(CLUSTER.parent)} is not there (cluster/ is another issue's work)")
    return path


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
    if not CLUSTER.exists():
        pytest.skip("no cluster/ directory")
    # long hex runs other than 40-digit git commit ids, and token-like values given to a
    # token/secret/password key (placeholders such as "<...>" or "$(...)" do not match)
    hexrun = re.compile(r"(?<![0-9a-fA-F])(?:[0-9a-fA-F]{32,39}|[0-9a-fA-F]{41,})(?![0-9a-fA-F])")
    keyed = re.compile(r"(?i)(token|secret|password)[\w-]*[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9+/_=-]{20,})")
    found = []
    for path in CLUSTER.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".yml", ".sh", ".py", ".md", ".json", ""):
            text = path.read_text(errors="replace")
            found += [f"{path.name}: {m.group()[:8]}..." for m in hexrun.finditer(text)]
            found += [f"{path.name}: {m.group(1)}={m.group(2)[:6]}..." for m in keyed.finditer(text)]
    assert found == []
