"""The search's data split and its per-epoch supernet accuracy on the held-out split."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import Subset

from arnas_ray.attacks import AttackSpec, pgd
from arnas_ray.data import make_loader
from arnas_ray.errors import SpecError

__all__ = ["split_indices", "supernet_accuracy"]


def supernet_accuracy(model: torch.nn.Module, dataset: Any, device: torch.device, *, attack: AttackSpec | None,
                      samples: int, batch_size: int = 256, seed: int = 0) -> tuple[float, float]:
    """Natural and PGD accuracy of ``model`` (eval mode) on the first ``samples`` items
    (PGD accuracy ``nan`` without an attack or with 0 attack steps)."""
    n = min(samples, len(dataset))
    loader = make_loader(Subset(dataset, range(n)), batch_size, shuffle=False, seed=seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    was = model.training
    model.eval()
    correct = torch.zeros(2, dtype=torch.long, device=device)
    try:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                correct[0] += (model(x).argmax(1) == y).sum()
            if attack is not None and attack.steps > 0:
                x_adv = pgd(model, x, y, attack, generator=gen)
                with torch.no_grad():
                    correct[1] += (model(x_adv).argmax(1) == y).sum()
    finally:
        model.train(was)
    c = correct.tolist()
    return c[0] / max(n, 1), (c[1] / max(n, 1)) if attack is not None and attack.steps > 0 else float("nan")


def split_indices(n: int, portion: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random split of ``range(n)`` into the weight part (``floor(portion * n)``
    items) and the architecture part.

    Raises:
        SpecError: a part would be empty.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = int(math.floor(portion * n))
    if cut < 1 or cut >= n:
        raise SpecError("train_portion", f"splits {n} training items into {cut} and {n - cut}; both must be >= 1")
    return perm[:cut], perm[cut:]
