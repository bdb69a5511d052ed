"""YAML helpers of the deployment tests: the documents of a multi-document file."""

from __future__ import annotations

from pathlib import Path

import yaml


def docs(path: Path) -> list[dict]:
    """Every non-empty document of a YAML file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def one(path: Path, kind: str) -> dict:
    """The single document of ``kind`` in a YAML file."""
    (doc,) = [d for d in docs(path) if d.get("kind") == kind]
    return doc
