"""Pick the compute device once; everything else receives it as an argument."""

from __future__ import annotations

import torch

__all__ = ["pick_device"]


def pick_device(name: str | None = None) -> torch.device:
    """``cuda`` when available, else ``cpu``; an explicit ``name`` ("cpu", "cuda:1") wins.

    Raises:
        ValueError: ``name`` asks for CUDA on a machine without it.
    """
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was requested but CUDA is not available; use 'cpu' or 'auto'")
    return dev
