"""``AttackSpec``: what to attack with, validated at construction.

``kind`` names an entry of the attack registry :data:`~arnas_ray.attacks.ATTACKS` (the one
home of the attack names: ``ATTACK_KINDS`` is derived from it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from arnas_ray._config import check, check_choice
from arnas_ray.attacks.registry import ATTACKS
from arnas_ray.errors import SpecError

__all__ = ["AA_ATTACKS", "AA_VERSIONS", "NORMS", "AttackSpec", "check_aa_attacks"]

NORMS: tuple[str, ...] = ("linf", "l2")
#: Versions of the official AutoAttack; ``custom`` runs ``AttackSpec.aa_attacks``.
AA_VERSIONS: tuple[str, ...] = ("standard", "plus", "rand", "custom")
#: Attack names understood by the official AutoAttack (``version="custom"``).
AA_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")


def check_aa_attacks(version: str, attacks: tuple[str, ...] | list[str], field: str) -> None:
    """``version`` is an AutoAttack version and ``attacks`` fits it (non-empty for ``custom``)."""
    check_choice(version, AA_VERSIONS, "version")
    for i, name in enumerate(attacks):
        check_choice(name, AA_ATTACKS, f"{field}[{i}]")
    if version == "custom":
        check(len(attacks) > 0, field, f"{field} non-empty with version='custom'", attacks)
    else:
        check(len(attacks) == 0, field, f"{field} empty unless version='custom'", attacks)


@dataclass(frozen=True)
class AttackSpec:
    """What to attack with; validated at construction, built from YAML by ``from_dict``.

    Attributes:
        kind: a registered attack (``sorted(ATTACKS)``: ``autoattack``, ``fgsm``, ``pgd``).
        eps: L-inf radius in the pixel space ``clip`` (8/255 is the CIFAR convention).
        alpha: PGD step size (FGSM steps by ``eps`` and ignores it).
        steps: PGD iterations (0 keeps the random start only); FGSM ignores it.
        random_start: PGD starts at ``x + U(-eps, eps)`` (Madry et al.) instead of ``x``.
        restarts: PGD restarts; per example the first perturbation that fools the model is
            kept, otherwise the one with the highest loss. Needs ``random_start`` when > 1.
        clip: ``(low, high)`` bounds of the input domain; outputs always lie inside.
        norm: distance measure; only ``"linf"`` is implemented (``"l2"`` is refused).
        version: AutoAttack version (:data:`AA_VERSIONS`); ``"standard"`` runs APGD-CE,
            APGD-T, FAB-T and Square.
        aa_attacks: the AutoAttack subset to run, only with ``version="custom"``.
    """

    kind: str = "pgd"
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 7
    random_start: bool = True
    restarts: int = 1
    clip: tuple[float, float] = (0.0, 1.0)
    norm: str = "linf"
    version: str = "standard"
    aa_attacks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice(self.kind, tuple(sorted(ATTACKS)), "kind")
        check(0 < self.eps < math.inf, "eps", "0 < eps < inf", self.eps)
        check(0 < self.alpha < math.inf, "alpha", "0 < alpha < inf", self.alpha)
        check(self.steps >= 0, "steps", "steps >= 0", self.steps)
        check(self.restarts >= 1, "restarts", "restarts >= 1", self.restarts)
        check(self.restarts == 1 or self.random_start, "restarts",
              "restarts == 1 or random_start", self.restarts)
        check(len(self.clip) == 2, "clip", "len(clip) == 2", self.clip)
        low, high = self.clip
        check(math.isfinite(low) and math.isfinite(high) and low < high, "clip",
              "clip[0] < clip[1], both finite", self.clip)
        check_choice(self.norm, NORMS, "norm")
        if self.norm != "linf":
            raise SpecError(
                "norm", f"norm {self.norm!r} is not implemented yet; implemented: ('linf',)"
            )
        check_aa_attacks(self.version, self.aa_attacks, "aa_attacks")

