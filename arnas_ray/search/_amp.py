"""Mixed precision of the search's forward passes: the autocast factory and the loss upcast."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

__all__ = ["autocast_factory", "upcast"]


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (autocast) to float32 for the loss; float32/64 stay as they are."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def autocast_factory(amp: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager[None]] | None:
    """A context-manager factory for ``SearchConfig.amp`` (``bf16``: bfloat16 autocast on the
    device's type), or None for full precision (``off``)."""
    if amp == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return None
