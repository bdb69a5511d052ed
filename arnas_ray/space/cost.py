"""Parameter and MAC counts (``torch.utils.flop_counter``), so users can size a sweep."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_macs", "count_params"]


def count_params(model: nn.Module, *, exclude: tuple[str, ...] = ("auxiliary", "alphas")) -> int:
    """Trainable parameter count, skipping names containing any of ``exclude``
    (the auxiliary head and the architecture parameters, as the reference counts)."""
    return sum(p.numel() for n, p in model.named_parameters() if not any(e in n for e in exclude))


@torch.no_grad()
def count_macs(model: nn.Module, image_size: int = 32, in_channels: int = 3,
               device: torch.device | str = "cpu") -> int:
    """Multiply-accumulates of one forward pass on one ``in_channels x S x S`` image (eval mode;
    the auxiliary head is inactive then). Counts convolutions and linear layers (FLOPs / 2)."""
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, in_channels, image_size, image_size, device=device)
        with FlopCounterMode(display=False) as counter:
            model(x)
        return int(counter.get_total_flops() // 2)
    finally:
        model.train(was_training)
