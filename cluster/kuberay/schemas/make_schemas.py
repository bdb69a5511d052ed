"""Regenerate ``raycluster.json`` and ``rayjob.json`` from KubeRay's CRDs.

The vendored schemas are the KubeRay ``ray.io/v1`` CRD schemas (OpenAPI v3, as the API server
checks them) cut down to the fields our manifests use, converted to JSON Schema 2020-12:

* every object with listed properties gets ``additionalProperties: false``: the API server
  prunes unknown fields of a structural CRD schema and ``kubectl apply`` (strict field
  validation, the default since kubectl 1.27) rejects them, so a misspelled field is an error;
* fields outside the subset below are rejected too (the subset is stricter than KubeRay); add
  them to the subset and rerun this script when a manifest needs one;
* ``nullable`` becomes a ``null`` type, ``x-kubernetes-*`` markers and descriptions are dropped;
  CEL rules (``x-kubernetes-validations``) are not translated (tests check the ones that
  matter, such as ``minReplicas <= replicas <= maxReplicas``).

Usage (from a checkout of ray-project/kuberay at the tag named in ``KUBERAY_REF``)::

    python cluster/kuberay/schemas/make_schemas.py \\
        KUBERAY/ray-operator/config/crd/bases/ray.io_rayclusters.yaml \\
        KUBERAY/ray-operator/config/crd/bases/ray.io_rayjobs.yaml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

KUBERAY_REF = "v1.7.0 (59d663aeec13760646da3db9c1cf8cfe883e30b7)"
FULL = "full"  # keep the CRD's whole subtree
Subset = dict[str, Any]

CONTAINER: Subset = {
    "name": FULL,
    "image": FULL,
    "imagePullPolicy": FULL,
    "command": FULL,
    "args": FULL,
    "workingDir": FULL,
    "env": FULL,
    "envFrom": FULL,
    "ports": FULL,
    "resources": FULL,
    "volumeMounts": FULL,
    "securityContext": FULL,
}
POD_TEMPLATE: Subset = {
    "metadata": FULL,
    "spec": {
        "containers": CONTAINER,
        "volumes": {
            "name": FULL,
            "persistentVolumeClaim": FULL,
            "configMap": FULL,
            "secret": FULL,
            "emptyDir": FULL,
        },
        "nodeSelector": FULL,
        "tolerations": FULL,
        "serviceAccountName": FULL,
        "securityContext": FULL,
        "terminationGracePeriodSeconds": FULL,
        "imagePullSecrets": FULL,
        "restartPolicy": FULL,
        "priorityClassName": FULL,
    },
}
RAY_CLUSTER_SPEC: Subset = {
    "rayVersion": FULL,
    "enableInTreeAutoscaling": FULL,
    "autoscalerOptions": FULL,
    "authOptions": FULL,
    "suspend": FULL,
    "headServiceAnnotations": FULL,
    "gcsFaultToleranceOptions": FULL,
    "headGroupSpec": {
        "rayStartParams": FULL,
        "serviceType": FULL,
        "enableIngress": FULL,
        "labels": FULL,
        "template": POD_TEMPLATE,
    },
    "workerGroupSpecs": {
        "groupName": FULL,
        "replicas": FULL,
        "minReplicas": FULL,
        "maxReplicas": FULL,
        "idleTimeoutSeconds": FULL,
        "numOfHosts": FULL,
        "suspend": FULL,
        "scaleStrategy": FULL,
        "labels": FULL,
        "rayStartParams": FULL,
        "template": POD_TEMPLATE,
    },
}
RAY_JOB_SPEC: Subset = {
    "entrypoint": FULL,
    "runtimeEnvYAML": FULL,
    "jobId": FULL,
    "metadata": FULL,
    "shutdownAfterJobFinishes": FULL,
    "ttlSecondsAfterFinished": FULL,
    "activeDeadlineSeconds": FULL,
    "backoffLimit": FULL,
    "submissionMode": FULL,
    "entrypointNumCpus": FULL,
    "entrypointNumGpus": FULL,
    "entrypointResources": FULL,
    "suspend": FULL,
    "clusterSelector": FULL,
    "deletionStrategy": FULL,
    "submitterPodTemplate": POD_TEMPLATE,
    "rayClusterSpec": RAY_CLUSTER_SPEC,
}

# ObjectMeta of the resource itself (the CRD leaves it to the API server).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_KEEP = {
    "type", "properties", "items", "required", "enum", "format", "pattern", "minimum",
    "maximum", "minLength", "maxLength", "minItems", "maxItems", "anyOf", "allOf", "oneOf",
    "default", "additionalProperties",
}


def convert(node: dict[str, Any]) -> dict[str, Any]:
    """Convert one OpenAPI v3 CRD schema node (and its subtree) to JSON Schema."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _KEEP:
            continue
        if key == "properties":
            out[key] = {name: convert(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = convert(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [convert(sub) for sub in value]
        else:
            out[key] = value
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def prune(node: dict[str, Any], subset: Subset | str, path: str) -> dict[str, Any]:
    """Keep the ``subset`` of ``node``'s fields, converting the kept subtrees."""
    if subset == FULL:
        return convert(node)
    if node.get("type") == "array":
        return {**convert({k: v for k, v in node.items() if k != "items"}),
                "items": prune(node["items"], subset, f"{path}[]")}
    props = node.get("properties", {})
    unknown = sorted(set(subset) - set(props))
    if unknown:
        raise KeyError(f"{path}: the CRD has no fields {unknown}; it has {sorted(props)}")
    shell = convert({k: v for k, v in node.items() if k != "properties"})
    shell["properties"] = {
        name: prune(props[name], sub, f"{path}.{name}") for name, sub in subset.items()
    }
    shell["required"] = [r for r in node.get("required", []) if r in subset]
    if not shell["required"]:
        del shell["required"]
    shell["additionalProperties"] = False
    return shell


def crd_spec(crd_path: Path) -> dict[str, Any]:
    """Return the ``spec`` schema of the served ``v1`` version of a CRD file."""
    crd = yaml.safe_load(crd_path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def resource_schema(kind: str, crd_path: Path, subset: Subset, title: str) -> dict[str, Any]:
    """Build the JSON Schema of one ``ray.io/v1`` resource kind."""
    spec = prune(crd_spec(crd_path), subset, "spec")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "$comment": (
            f"Generated by make_schemas.py from ray-project/kuberay {KUBERAY_REF}, "
            f"{crd_path.name}: the fields arnas-ray's manifests use, strict about unknown keys."
        ),
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"enum": ["ray.io/v1"]},
            "kind": {"enum": [kind]},
            "metadata": OBJECT_META,
            "spec": spec,
        },
    }


def main() -> None:
    """Write ``raycluster.json`` and ``rayjob.json`` beside this script."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rayclusters_crd", type=Path)
    parser.add_argument("rayjobs_crd", type=Path)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    schemas = {
        "raycluster.json": resource_schema(
            "RayCluster", args.rayclusters_crd, RAY_CLUSTER_SPEC, "KubeRay RayCluster (subset)"
        ),
        "rayjob.json": resource_schema(
            "RayJob", args.rayjobs_crd, RAY_JOB_SPEC, "KubeRay RayJob (subset)"
        ),
    }
    for name, schema in schemas.items():
        (here / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
