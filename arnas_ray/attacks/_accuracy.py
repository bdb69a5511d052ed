"""``robust_accuracy``: the fraction of examples an attack does not flip."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from arnas_ray._config import check
from arnas_ray.attacks._common import check_labels, logits_of
from arnas_ray.attacks.registry import Model, attack
from arnas_ray.attacks.spec import AttackSpec

__all__ = ["robust_accuracy"]


def robust_accuracy(
    model: Model,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> float:
    """Fraction of ``x`` still classified as ``y`` after the attack, attacked in batches.

    The model is used in its current mode for both the attack and the prediction.

    Args:
        model: callable returning logits (or a tuple whose first element is the logits).
        x: inputs ``[N, C, H, W]`` within ``spec.clip``, on the model's device.
        y: labels ``[N]``.
        spec: the attack.
        batch_size: examples per attacked batch.
        generator: seeds the random starts, batch after batch.

    Returns:
        Robust accuracy in ``[0, 1]`` (``nan`` for an empty ``x``).
    """
    check(batch_size >= 1, "batch_size", "batch_size >= 1", batch_size)
    check_labels(x, y)
    n = x.shape[0]
    if n == 0:
        return math.nan
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for i in range(0, n, batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        x_adv = attack(model, xb, yb, spec, generator=generator)
        with torch.no_grad():
            correct += (logits_of(model(x_adv)).argmax(dim=1) == yb).sum().to(correct.device)
    return correct.item() / n
