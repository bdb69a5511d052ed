"""The attack registry ``ATTACKS``, the contract of its entries, and ``attack``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from arnas_ray._registry import Registry

if TYPE_CHECKING:
    from arnas_ray.attacks.spec import AttackSpec

__all__ = ["ATTACKS", "AttackFn", "Model", "attack"]

Model = Callable[[Tensor], Any]
"""A callable returning logits ``[N, K]``, or a tuple whose first element is the logits."""


class AttackFn(Protocol):
    """The contract of every registered attack."""

    def __call__(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        spec: AttackSpec | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...


#: Attacks by :attr:`AttackSpec.kind`; the one list of attack names (``ATTACK_KINDS``).
ATTACKS: Registry[AttackFn] = Registry("attack")


def attack(
    model: Model,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Run the attack named by ``spec.kind`` (looked up in :data:`ATTACKS`).

    Example:
        >>> from arnas_ray.attacks import AttackSpec
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
        >>> images, labels = torch.rand(5, 3, 2, 2), torch.zeros(5, dtype=torch.long)
        >>> spec = AttackSpec(kind="pgd", eps=0.1, alpha=0.05, steps=3)
        >>> adv = attack(net, images, labels, spec, generator=torch.Generator().manual_seed(1))
        >>> bool(((adv - images).abs() <= 0.1 + 1e-6).all() and (adv >= 0).all())
        True
    """
    return ATTACKS.get_or_raise(spec.kind)(model, x, y, spec, generator=generator)

