"""The shipped cluster files agree with the code that runs on them.

No cloud account, Kubernetes cluster or Docker engine is needed. What is checked, each with a
control that shows the check can fail:

* no credentials (AWS keys, GCP private keys, tokens) in any file of ``cluster/`` and ``docker/``;
* the RayJob retries (``backoffLimit > 0``) and its entrypoint is what ``sweep submit`` runs:
  parsed by the real ``arnas-ray`` argument parser and compared with ``sweep_entrypoint``;
* every storage a shipped file names is an object-store URI or a path the manifest mounts on
  every pod (the PVC variant is produced by the shipped JSON patches, with ``kubectl patch
  --local`` when kubectl is installed);
* the head runs the driver and no trial: the submission asks for no entrypoint resources (so the
  Jobs API pins the driver to the head), the head advertises no CPU and the spec refuses trials
  without one, the head machine has the cores and memory for it;
* every example spec's trials fit on a worker of every shipped cluster;
* the launcher YAMLs' setup and start commands name files that exist in the synced repository;
* the IAM pieces the configs name are the ones docs/cluster.md creates; docs/cluster.md shows
  the entrypoint the code builds and names only tests and files that exist.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import jsonschema
import pytest
import yaml

from ._yaml import docs as _docs
from ._yaml import one as _one

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
DOCS = ROOT / "docs" / "cluster.md"
LAUNCHERS = {"aws": CLUSTER / "aws.yaml", "gcp": CLUSTER / "gcp.yaml"}
OBJECT_STORES = ("s3", "gs")
#: vCPUs and GiB of memory of the instance types the launcher configs use (a new type must be
#: added here, with its numbers from the cloud's documentation)
MACHINES = {"m5.xlarge": (4, 16), "g5.xlarge": (4, 16), "n2-standard-4": (4, 16),
            "g2-standard-8": (8, 32)}


def _pyproject(root: Path = ROOT) -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    path = root / "pyproject.toml"
    return tomllib.loads(path.read_text()) if path.is_file() else {}


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((KUBERAY / "schemas" / name).read_text()))


# ------------------------------------------------------------------------------ JSON patches
def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def apply_patch(doc: dict, ops: list[dict]) -> dict:
    """RFC 6902 ``add``/``replace`` (what the shipped patches use), on a copy."""
    out = copy.deepcopy(doc)
    for op in ops:
        *parents, last = _pointer(op["path"])
        target = out
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if op["op"] == "replace":
            if isinstance(target, list):
                target[int(last)] = op["value"]
            else:
                assert last in target, f"replace of a missing {op['path']}"
                target[last] = op["value"]
        elif op["op"] == "add":
            if isinstance(target, list):
                target.insert(len(target) if last == "-" else int(last), op["value"])
            else:
                target[last] = op["value"]
        else:
            raise AssertionError(f"unexpected op {op['op']!r}")
    return out


def test_patch_helper_follows_rfc_6902():
    doc = {"a": {"b": [1]}, "c": 1}
    ops = [{"op": "add", "path": "/a/b/-", "value": 2}, {"op": "replace", "path": "/c", "value": 3},
           {"op": "add", "path": "/a/d", "value": [4]}]
    assert apply_patch(doc, ops) == {"a": {"b": [1, 2], "d": [4]}, "c": 3}
    assert doc == {"a": {"b": [1]}, "c": 1}
    with pytest.raises(AssertionError, match="missing"):
        apply_patch(doc, [{"op": "replace", "path": "/x", "value": 1}])


def _pvc_variant(name: str) -> dict:
    kind = {"raycluster": "RayCluster", "rayjob": "RayJob"}[name]
    ops = yaml.safe_load((KUBERAY / "pvc" / f"{name}-patch.yaml").read_text())
    return apply_patch(_one(KUBERAY / f"{name}.yaml", kind), ops)


def _variants() -> dict[str, dict]:
    """Every RayCluster/RayJob the repository ships, the PVC-patched ones included."""
    return {
        "raycluster": _one(KUBERAY / "raycluster.yaml", "RayCluster"),
        "rayjob": _one(KUBERAY / "rayjob.yaml", "RayJob"),
        "raycluster+pvc": _pvc_variant("raycluster"),
        "rayjob+pvc": _pvc_variant("rayjob"),
    }


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _pods(doc: dict) -> list[tuple[str, dict]]:
    spec = _cluster_spec(doc)
    groups = [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]
    return [(name, g["template"]["spec"]) for name, g in groups]


def _mounted_everywhere(doc: dict) -> set[str]:
    """Mount paths of volumes that every pod (head and workers) mounts from one shared PVC."""
    per_pod = []
    for _, pod in _pods(doc):
        claims = {v["name"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
        per_pod.append({m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])
                        if m["name"] in claims})
    return set.intersection(*per_pod)


@pytest.mark.parametrize("name", ["raycluster+pvc", "rayjob+pvc"])
def test_pvc_variants_validate_and_mount_the_rwx_claim_everywhere(name):
    doc = _variants()[name]
    schema = "rayjob.json" if doc["kind"] == "RayJob" else "raycluster.json"
    errors = list(_validator(schema).iter_errors(doc))
    assert not errors, [f"{e.json_path}: {e.message}" for e in errors]
    assert _mounted_everywhere(doc) == {"/mnt/results"}
    pvc = _one(KUBERAY / "pvc" / "pvc.yaml", "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for _, pod in _pods(doc):
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v]
        assert claims == [pvc["metadata"]["name"]]


def test_unpatched_manifests_mount_no_shared_volume():
    """The object-store manifests need no volume: nothing would create its claim."""
    for name in ("raycluster", "rayjob"):
        assert _mounted_everywhere(_variants()[name]) == set()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("name", ["raycluster", "rayjob"])
def test_kubectl_applies_the_shipped_patch_as_documented(name):
    """The README's `kubectl patch --local` command gives what the tests check."""
    out = subprocess.run(
        ["kubectl", "patch", "--local", "-f", str(KUBERAY / f"{name}.yaml"), "--type", "json",
         "--patch-file", str(KUBERAY / "pvc" / f"{name}-patch.yaml"), "-o", "json"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == _pvc_variant(name)


# ------------------------------------------------------------------------------ credentials
def _credential_patterns() -> dict[str, re.Pattern[str]]:
    return {
        "AWS access key id": re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA)[A-Z0-9]{16}(?![A-Z0-9])"),
        "AWS secret key": re.compile(
            r"(?i)aws_?secret_?access_?key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{30,}"),
        "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        "GCP service-account key": re.compile(r"\"private_key(?:_id)?\"\s*:"),
        "Google API key": re.compile(r"AIza[0-9A-Za-z_-]{35}"),
        "GitHub token": re.compile(r"gh[pousr]_[A-Za-z0-9]{36}"),
        "literal token/secret/password": re.compile(
            r"(?i)(?:token|secret|password|passwd)[\w-]*[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9+/_=-]{20,}"),
        "long hex string": re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{32,}(?![0-9A-Za-z])"),
    }


def _credential_findings(text: str, allowed: set[str]) -> list[str]:
    found = []
    for what, pattern in _credential_patterns().items():
        found += [f"{what}: {m.group()[:12]}..." for m in pattern.finditer(text) if m.group() not in allowed]
    return found


def _scanned_files() -> list[Path]:
    files = [p for base in (CLUSTER, ROOT / "docker") for p in base.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    return sorted(files + [ROOT / ".dockerignore"])


def test_credential_scan_finds_planted_credentials():
    key_id = "AKIA" + "IOSFODNN7EXAMPLE"  # AWS's documentation example, assembled here
    planted = {
        "AWS access key id": f"aws_access_key_id = {key_id}",
        "AWS secret key": "AWS_SECRET_ACCESS_KEY=" + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "private key": "-----BEGIN " + "PRIVATE KEY-----\nMIIE...",
        "GCP service-account key": '{"type": "service_account", "private_key": "..."}',
        "Google API key": "key=AIza" + "Sy" + "A" * 33,
        "GitHub token": "ghp_" + "a1" * 18,
        "literal token/secret/password": "auth_token: " + "abcdefghijklmnopqrstuvwxyz0123",
        "long hex string": "RAY_AUTH_TOKEN " + "0123456789abcdef" * 4,
    }
    for what, text in planted.items():
        assert any(f.startswith(what) for f in _credential_findings(text, set())), what


def test_no_credentials_in_cluster_and_docker_files():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_schemas", KUBERAY / "schemas" / "make_schemas.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    allowed = set(re.findall(r"[0-9a-f]{40}", make.KUBERAY_REF))  # the vendored CRDs' commit id
    files = _scanned_files()
    names = {str(p.relative_to(ROOT)) for p in files}
    assert {"cluster/aws.yaml", "cluster/gcp.yaml", "cluster/kuberay/rayjob.yaml",
            "cluster/kuberay/serviceaccount.yaml", "docker/Dockerfile"} <= names
    problems = {str(p.relative_to(ROOT)): f for p in files
                if (f := _credential_findings(p.read_text(errors="replace"), allowed))}
    assert problems == {}


def test_no_manifest_passes_a_credential_as_an_env_literal():
    secretish = re.compile(r"(?i)KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL")
    for name, doc in _variants().items():
        for pod_name, pod in _pods(doc):
            for container in pod["containers"]:
                for env in container.get("env", []):
                    if secretish.search(env["name"]):
                        assert "value" not in env, f"{name}/{pod_name}: {env['name']} is a literal"
    for path in KUBERAY.rglob("*.yaml"):
        assert not [d for d in _docs(path) if isinstance(d, dict) and d.get("kind") == "Secret"], \
            f"{path}: a committed Secret"


# ------------------------------------------------------------------------------ storage
def storage_problem(value: str, mounted: set[str]) -> str | None:
    """Why ``value`` is no storage every node reaches, or None: an ``s3://``/``gs://`` URI with a
    bucket, or an absolute path at or below one of ``mounted``."""
    if "://" in value:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in OBJECT_STORES:
            return f"{value!r}: scheme {parts.scheme!r} is not an object store ({OBJECT_STORES})"
        if not parts.netloc:
            return f"{value!r}: no bucket"
        return None
    path = Path(value)
    if not path.is_absolute():
        return f"{value!r} is relative: each node would resolve it in its own working directory"
    if not any(path == Path(m) or Path(m) in path.parents for m in mounted):
        return f"{value!r} is not on a volume mounted on every node (mounted: {sorted(mounted)})"
    return None


@pytest.mark.parametrize(("value", "mounted", "problem"), [
    ("runs", set(), "relative"),
    ("/mnt/other/runs", {"/mnt/results"}, "not on a volume"),
    ("/mnt/resultsx", {"/mnt/results"}, "not on a volume"),
    ("s3:///runs", set(), "no bucket"),
    ("hdfs://nn/runs", set(), "not an object store"),
])
def test_storage_check_rejects_what_nodes_cannot_share(value, mounted, problem):
    assert problem in (storage_problem(value, mounted) or "")


def _code(text: str) -> str:
    """The code of a Markdown text: fenced blocks, and each inline code span on a line of its own."""
    fence = r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```"
    blocks = re.findall(fence, text, re.M | re.S)
    prose = re.sub(fence, "", text, flags=re.M | re.S)
    return "\n".join(blocks + re.findall(r"`([^`\n]+)`", prose))


def _storage_flags(text: str, markdown: bool = False) -> list[str]:
    """Every value given to ``--storage`` in a text (commands in comments, code in Markdown)."""
    values = []
    for line in (_code(text) if markdown else text.replace("`", " ")).splitlines():
        line = line.strip().lstrip("#").strip().rstrip("\\").strip()
        if "--storage" not in line:
            continue
        try:
            words = shlex.split(line, comments=False)
        except ValueError:  # an unbalanced quote in prose
            words = line.split()
        values += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--storage"]
    return [v for v in values if not v.startswith("-")]


def _entrypoint_args(doc: dict):
    from arnas_ray.cli import build_parser

    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[0] == "arnas-ray", argv
    return build_parser().parse_args(argv[1:])


def test_storage_in_the_kuberay_files_is_a_bucket_or_a_mounted_path():
    variants = _variants()
    checked = 0
    for name in ("rayjob", "rayjob+pvc"):  # what the RayJobs actually run
        storage = _entrypoint_args(variants[name]).storage
        assert storage_problem(storage, _mounted_everywhere(variants[name])) is None, name
        checked += 1
    # commands in comments and the README: on the plain manifests (bucket), or, for the
    # PVC alternative's files, on what its patches mount
    mounted = {"raycluster.yaml": set(), "rayjob.yaml": set(), "serviceaccount.yaml": set(),
               "sweep-configmap.yaml": set()}
    pvc = _mounted_everywhere(variants["raycluster+pvc"]) & _mounted_everywhere(variants["rayjob+pvc"])
    for path in sorted(KUBERAY.rglob("*")):
        if not path.is_file() or path.suffix not in (".yaml", ".md"):
            continue
        where = pvc if ("pvc" in path.parts or path.name == "README.md") else mounted[path.name]
        for value in _storage_flags(path.read_text(), markdown=path.suffix == ".md"):
            assert storage_problem(value, where) is None, f"{path.relative_to(ROOT)}: {value}"
            checked += 1
    spec = yaml.safe_load(_one(KUBERAY / "sweep-configmap.yaml", "ConfigMap")["data"]["sweep.yaml"])
    assert "storage" not in spec  # the RayJob's --storage decides
    assert checked >= 6


def _launcher_mounts(config: dict) -> set[str]:
    """Paths the launcher's setup commands mount (``mount ... PATH``)."""
    out = set()
    for cmd in config.get("setup_commands", []):
        for part in re.split(r"&&|;|\|\|", cmd):
            words = part.replace("(", " ").replace(")", " ").split()
            if "mount" in words and "mountpoint" not in words[:1]:
                out.add(words[-1])
    return out


@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_storage_in_the_launcher_files_is_a_bucket_or_a_mounted_path(cloud):
    text = LAUNCHERS[cloud].read_text()
    values = _storage_flags(text)
    assert values, "the header shows no `--storage`"
    mounted = _launcher_mounts(yaml.safe_load(text))
    for value in values:
        assert storage_problem(value, mounted) is None, value
    assert {urllib.parse.urlsplit(v).scheme for v in values} == {"aws": {"s3"}, "gcp": {"gs"}}[cloud]


def test_storage_in_docs_is_a_bucket_a_mount_it_shows_or_the_local_cluster():
    text = DOCS.read_text()
    shown = {m.group(1) for m in re.finditer(r"\bmount\b[^\n`]*?\s(/mnt/[\w/-]+)\)", text)}
    assert {"/mnt/efs", "/mnt/filestore"} <= shown
    kuberay = _mounted_everywhere(_variants()["raycluster+pvc"])
    values = _storage_flags(text, markdown=True)
    assert len(values) >= 10 and {"/mnt/efs/arnas-runs", "/mnt/filestore/arnas-runs"} <= set(values)
    for value in values:
        local_cluster = value.startswith("/tmp/")  # section 3: every node on one machine
        assert local_cluster or storage_problem(value, shown | kuberay) is None, value


# ------------------------------------------------------------------------------ the RayJob
def test_rayjob_retries_and_runs_what_sweep_submit_runs():
    from arnas_ray.cli import _sweep
    from arnas_ray.sweep.jobs import SUBMIT_LEASE_WAIT_S, sweep_entrypoint
    from arnas_ray.sweep.lease import DEFAULT_TTL_S

    for name in ("rayjob", "rayjob+pvc"):
        job = _variants()[name]
        assert job["spec"]["backoffLimit"] > 0, "a failed attempt must be retried on a new cluster"
        args = _entrypoint_args(job)
        assert args.func is _sweep._run  # `sweep run`
        assert args.address == "auto" and not args.force
        # a retried attempt waits for the dead driver's lease to go stale, then takes over
        assert args.lease_wait == SUBMIT_LEASE_WAIT_S > DEFAULT_TTL_S
        # the same options as the entrypoint `sweep submit` builds for this storage
        submitted = shlex.split(sweep_entrypoint(args.storage))
        tail = submitted[submitted.index("arnas_ray") + 1:]
        ours = {k: v for k, v in vars(args).items() if k not in ("spec", "func")}
        from arnas_ray.cli import build_parser

        theirs = {k: v for k, v in vars(build_parser().parse_args(tail)).items() if k not in ("spec", "func")}
        assert ours == theirs, name


def test_entrypoint_check_catches_a_wrong_entrypoint():
    job = copy.deepcopy(_variants()["rayjob"])
    job["spec"]["entrypoint"] = "arnas-ray sweep run /config/sweep.yaml --lease-wiat 120"
    with pytest.raises(SystemExit):
        _entrypoint_args(job)


def test_rayjob_spec_is_the_mounted_configmap():
    job = _variants()["rayjob"]
    config_map = _one(KUBERAY / "sweep-configmap.yaml", "ConfigMap")
    spec_path = Path(_entrypoint_args(job).spec)
    (_, head), *_ = _pods(job)
    volumes = {v["name"]: v for v in head["volumes"]}
    mounts = {m["mountPath"]: m for m in head["containers"][0]["volumeMounts"]}
    mount = mounts[str(spec_path.parent)]
    assert mount.get("readOnly") is True
    assert volumes[mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert spec_path.name in config_map["data"]


# ------------------------------------------------------------------------------ head and trials
def _quantity(value: str | int | float) -> float:
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def test_submission_asks_for_no_entrypoint_resources(monkeypatch):
    """So the Jobs API runs the driver on the head, which needs no logical CPU for it."""
    from arnas_ray.sweep import jobs
    from arnas_ray.sweep.spec import SweepSpec

    sent = {}

    class Client:
        def submit_job(self, **kwargs):
            sent.update(kwargs)
            return "raysubmit_test"

        def get_address(self):
            return "http://head:8265"

    monkeypatch.setattr(jobs, "connect", lambda *a, **k: Client())
    spec = SweepSpec.from_dict({"name": "head-check", "dataset": {"name": "digits"}})
    jobs.submit_sweep(spec, "http://head:8265", storage="s3://bucket/runs?region=us-east-1")
    assert sent["entrypoint"] == jobs.sweep_entrypoint("s3://bucket/runs?region=us-east-1")
    assert not {k for k in sent if k.startswith("entrypoint_")}, sent


def test_no_trial_fits_on_a_head_without_cpus():
    from arnas_ray.errors import SpecError
    from arnas_ray.sweep.spec import ResourcesSpec

    for cpu in (0, 0.0, -1):
        with pytest.raises(SpecError, match="cpu"):
            ResourcesSpec(cpu=cpu, gpu=0.25)


@pytest.mark.parametrize("name", ["raycluster", "rayjob", "raycluster+pvc", "rayjob+pvc"])
def test_kuberay_head_runs_the_driver_and_no_trial(name):
    doc = _variants()[name]
    head = _cluster_spec(doc)["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    if doc["kind"] == "RayJob":
        assert not {k for k in doc["spec"] if k.startswith("entrypoint") and k != "entrypoint"}
    limits = head["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits
    assert _quantity(limits["cpu"]) >= 2 and _quantity(limits["memory"]) >= 4 * 2**30, limits


@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_launcher_head_runs_the_driver_and_no_trial(cloud):
    config = yaml.safe_load(LAUNCHERS[cloud].read_text())
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert "--num-cpus=0" in " ".join(config["head_start_ray_commands"])
    node = head["node_config"]
    machine = node.get("InstanceType") or node.get("machineType")
    vcpus, gib = MACHINES[machine]
    assert vcpus >= 4 and gib >= 8, machine


def _worker_shapes() -> dict[str, list[tuple[float, float]]]:
    """(CPUs, GPUs) of each worker type of each shipped cluster."""
    shapes = {}
    for cloud, path in LAUNCHERS.items():
        config = yaml.safe_load(path.read_text())
        shapes[cloud] = [(t["resources"].get("CPU", 0), t["resources"].get("GPU", 0))
                         for name, t in config["available_node_types"].items()
                         if name != config["head_node_type"]]
        for name, t in config["available_node_types"].items():
            machine = t["node_config"].get("InstanceType") or t["node_config"].get("machineType")
            assert t["resources"].get("CPU", 0) <= MACHINES[machine][0], (cloud, name)
    for name in ("raycluster", "rayjob"):
        groups = _cluster_spec(_variants()[name])["workerGroupSpecs"]
        shapes[name] = [(_quantity(g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]),
                         _quantity(g["template"]["spec"]["containers"][0]["resources"]["limits"]
                                   .get("nvidia.com/gpu", 0))) for g in groups]
    return shapes


def _specs() -> dict[str, dict]:
    specs = {p.name: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples").glob("*.yaml"))}
    specs["sweep-configmap.yaml"] = yaml.safe_load(
        _one(KUBERAY / "sweep-configmap.yaml", "ConfigMap")["data"]["sweep.yaml"])
    return specs


def _fits(resources: dict, shapes: list[tuple[float, float]]) -> bool:
    return any(resources.get("cpu", 1.0) <= cpu and resources.get("gpu", 0.0) <= gpu for cpu, gpu in shapes)


def test_every_example_trial_fits_on_a_worker_of_every_cluster():
    from arnas_ray.sweep.spec import SweepSpec

    shapes = _worker_shapes()
    assert set(shapes) == {"aws", "gcp", "raycluster", "rayjob"}
    specs = _specs()
    assert len(specs) >= 5
    for name, data in specs.items():
        spec = SweepSpec.from_dict(data)  # valid specs, so the check is about real resources
        for res in (spec.resources, spec.retrain_resources or spec.resources):
            for cluster, shape in shapes.items():
                assert _fits({"cpu": res.cpu, "gpu": res.gpu}, shape), (name, cluster, res)
    assert not _fits({"cpu": 9, "gpu": 1}, shapes["raycluster"])  # the check can fail


# ------------------------------------------------------------------------------ launchers
def _excluded(rel: str, patterns: list[str]) -> bool:
    parts = Path(rel).parts
    return any(fnmatch.fnmatch(rel, p) or any(fnmatch.fnmatch(part, p) for part in parts)
               for p in patterns)


def launcher_reference_problems(config: dict, root: Path) -> list[str]:
    """Files the launcher's commands use from the synced repository that would be missing."""
    mounts = {dst: src for dst, src in config.get("file_mounts", {}).items()}
    repo_dst = [dst for dst, src in mounts.items() if (root / src).resolve() == root.resolve()]
    problems = []
    if not repo_dst:
        return ["no file_mounts entry syncs the repository"]
    base = repo_dst[0].removeprefix("~/")
    excluded = config.get("rsync_exclude", [])
    commands = [c for key in ("setup_commands", "head_setup_commands", "worker_setup_commands",
                              "head_start_ray_commands", "worker_start_ray_commands")
                for c in config.get(key, [])]
    ref = re.compile(r"(?:~|\$HOME|\$\{HOME\})/" + re.escape(base) + r"(/[^\s\"'\[\]]*)?(\[[\w,-]+\])?")
    extras = _pyproject(root).get("project", {}).get("optional-dependencies", {})
    seen = 0
    for cmd in commands:
        for m in ref.finditer(cmd):
            seen += 1
            rel = (m.group(1) or "/").strip("/")
            target = root / rel if rel else root
            if not target.exists():
                problems.append(f"{m.group()}: {rel} is not in the repository")
            elif rel and _excluded(rel, excluded):
                problems.append(f"{m.group()}: {rel} is excluded from the sync")
            if m.group(2):  # pip install DIR[extra]: the project and its extras
                if not (target / "pyproject.toml").is_file():
                    problems.append(f"{m.group()}: no pyproject.toml to install")
                for extra in m.group(2).strip("[]").split(","):
                    if extra not in extras:
                        problems.append(f"{m.group()}: no extra {extra!r} in pyproject.toml")
    for needed in ("pyproject.toml", "constraints.txt", "arnas_ray"):
        if _excluded(needed, excluded):
            problems.append(f"{needed} is excluded from the sync")
    if not seen:
        problems.append("no command uses the synced repository")
    return problems


@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_launcher_commands_reference_files_that_exist(cloud):
    config = yaml.safe_load(LAUNCHERS[cloud].read_text())
    assert launcher_reference_problems(config, ROOT) == []
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # the local token


def test_launcher_reference_check_catches_missing_files():
    config = yaml.safe_load(LAUNCHERS["aws"].read_text())
    broken = copy.deepcopy(config)
    broken["setup_commands"].append("pip install -r ~/arnas-ray/requirements-missing.txt")
    broken["setup_commands"].append('pip install "$HOME/arnas-ray[nosuchextra]"')
    broken["rsync_exclude"].append("constraints.txt")
    problems = launcher_reference_problems(broken, ROOT)
    assert any("requirements-missing.txt is not in the repository" in p for p in problems)
    assert any("no extra 'nosuchextra'" in p for p in problems)
    assert any("constraints.txt is excluded" in p for p in problems)


def test_launcher_nodes_get_bucket_credentials_from_their_identity():
    aws = yaml.safe_load(LAUNCHERS["aws"].read_text())
    docs = DOCS.read_text()
    for name, node_type in aws["available_node_types"].items():
        profile = node_type["node_config"]["IamInstanceProfile"]["Name"]
        assert re.search(rf"for ROLE in [^\n]*\b{re.escape(profile)}\b", docs), (name, profile)
    assert "create-instance-profile --instance-profile-name $ROLE" in docs
    assert "iam:PassRole" in docs and "arnas-ray-worker" in docs
    gcp = yaml.safe_load(LAUNCHERS["gcp"].read_text())
    project = gcp["provider"]["project_id"]
    workers = [t for n, t in gcp["available_node_types"].items() if n != gcp["head_node_type"]]
    for node_type in workers:
        (account,) = node_type["node_config"]["serviceAccounts"]
        local, domain = account["email"].split("@")
        assert domain == f"{project}.iam.gserviceaccount.com"
        assert f"gcloud iam service-accounts create {local}" in docs
        assert set(account["scopes"]) & {"https://www.googleapis.com/auth/cloud-platform",
                                         "https://www.googleapis.com/auth/devstorage.read_write"}


def test_kuberay_pods_get_bucket_credentials_from_their_service_account():
    account = _one(KUBERAY / "serviceaccount.yaml", "ServiceAccount")
    notes = account["metadata"]["annotations"]
    assert notes["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert notes["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    for name, doc in _variants().items():
        for pod_name, pod in _pods(doc):
            assert pod["serviceAccountName"] == account["metadata"]["name"], (name, pod_name)


# ------------------------------------------------------------------------------ image and docs
def test_image_dependencies_cover_the_cluster_code():
    """The image installs the package with its dependencies: pyarrow (S3 and GCS clients built
    in) and ray with the `default` extra (dashboard, Jobs API, autoscaler on the head)."""
    import pyarrow.fs as pafs

    deps = _pyproject()["project"]["dependencies"]
    ray = [d for d in deps if re.match(r"ray\[", d)]
    assert ray and "default" in ray[0] and "tune" in ray[0], deps
    assert any(re.match(r"pyarrow\b", d) for d in deps)
    assert pafs.S3FileSystem and pafs.GcsFileSystem  # the pyarrow wheels' object-store clients
    runtime = (ROOT / "docker" / "Dockerfile").read_text().split("AS runtime", 1)[1]
    installs = [line for line in runtime.splitlines() if "pip install" in line]
    assert installs and not any("--no-deps" in line for line in installs), installs


def test_docs_show_the_entrypoint_the_code_builds():
    from arnas_ray.sweep.jobs import sweep_entrypoint

    text = DOCS.read_text()
    shown = re.search(r"s3://arnas-demo/runs\?endpoint_override=127\.0\.0\.1:(\d+)&scheme=http", text)
    assert shown, "no moto storage URI in the docs"
    assert sweep_entrypoint(shown.group()) in text


def test_docs_name_only_tests_and_files_that_exist():
    text = DOCS.read_text() + (KUBERAY / "README.md").read_text()
    refs = set(re.findall(r"\b((?:tests|cluster|docker|examples|arnas_ray)/[\w./-]*\w)(?:::(\w+))?", text))
    assert len(refs) >= 15
    for path, test in refs:
        target = ROOT / path
        assert target.exists(), path
        if test:
            assert re.search(rf"^def {test}\(", target.read_text(), re.M), f"{path}::{test}"
