"""Argument types shared by the command groups."""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path
from typing import Any

from arnas_ray.errors import SpecError

__all__ = ["data_arguments", "names", "number", "numbers", "yaml_mapping"]


def number(text: str) -> float:
    """A float written as a decimal or a fraction (``8/255``)."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction such as 8/255, got {text!r}") from None


def numbers(text: str) -> list[float]:
    """Comma-separated numbers (``1,2,2``)."""
    return [number(t) for t in text.split(",") if t.strip()]


def names(text: str) -> list[str]:
    """Comma-separated names (``natural,pgd20``)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def yaml_mapping(path: Path | None, what: str) -> dict[str, Any]:
    """The mapping in a ``--config`` YAML file (``{}`` without one); parsed with
    ``yaml.safe_load``, so tags are refused and nothing is executed."""
    if path is None:
        return {}
    import yaml

    if not path.is_file():
        raise SpecError("config", f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SpecError("config", f"{str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError("config", f"{str(path)!r} must hold a mapping of {what} fields, got {type(data).__name__}")
    return data


def data_arguments(p: argparse.ArgumentParser, *, limit_help: str) -> None:
    """``--dataset``, ``--root``, ``--image-size`` and ``--data-limit`` of a training command."""
    p.add_argument("--dataset", default="digits", help="data set name (default: digits)")
    p.add_argument("--root", default=None, help="folder of a data set read from disk")
    p.add_argument("--image-size", type=int, default=None, help="image side (data set default)")
    p.add_argument("--data-limit", type=int, default=None, help=limit_help)
