"""Argument types shared by the command groups."""

from __future__ import annotations

import argparse
from fractions import Fraction

__all__ = ["names", "number", "numbers"]


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
