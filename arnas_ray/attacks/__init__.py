"""White-box adversarial attacks behind one contract: FGSM, PGD (L-inf) and AutoAttack.

Every attack is a registered function ``attack_fn(model, x, y, spec, *, generator=None)``
that returns adversarial inputs of the shape of ``x``:

* ``model`` is any callable returning logits ``[N, K]``; when it returns a tuple (DARTS
  networks with an auxiliary head do) the first element is taken (:func:`logits_of`).
* ``x`` lies in the pixel space ``spec.clip`` (``[0, 1]`` by default): ``eps`` and ``alpha``
  are measured in that space, so a model that normalises must do so inside its ``forward``.
* The attack runs in whatever train/eval mode the caller set and never changes it: the ARNAS
  search attacks the supernet in train mode (batch statistics), evaluation attacks in eval
  mode. Only the gradient with respect to the input is computed (``torch.autograd.grad``),
  so no parameter ``.grad`` is written and no optimiser is built.

The package holds one concept per module: ``spec`` (:class:`AttackSpec`, the presets),
``registry`` (:data:`ATTACKS`, the one list of attack names, and :func:`attack`), the
attacks ``_fgsm``, ``_pgd`` and ``_autoattack``, ``_presets`` (:data:`PRESETS`) and
``_accuracy`` (:func:`robust_accuracy`); ``_common`` holds what the attacks share.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10)).eval()
    >>> x, y = torch.rand(2, 3, 4, 4), torch.tensor([1, 2])
    >>> x_adv = attack(model, x, y, PRESETS["pgd20"], generator=torch.Generator().manual_seed(0))
    >>> bool((x_adv - x).abs().max() <= PRESETS["pgd20"].eps + 1e-6)
    True
"""

from __future__ import annotations

from arnas_ray.attacks._accuracy import robust_accuracy
from arnas_ray.attacks._autoattack import MissingAutoAttackError, autoattack
from arnas_ray.attacks._common import frozen_parameters, logits_of
from arnas_ray.attacks._fgsm import fgsm
from arnas_ray.attacks._pgd import pgd, pgd_groups
from arnas_ray.attacks._presets import PRESETS
from arnas_ray.attacks.registry import ATTACKS, AttackFn, Model, attack
from arnas_ray.attacks.spec import AA_ATTACKS, AA_VERSIONS, NORMS, AttackSpec

#: The built-in attack kinds, sorted (the names this package registers in :data:`ATTACKS`).
ATTACK_KINDS: tuple[str, ...] = tuple(sorted(ATTACKS))

__all__ = [
    "AA_ATTACKS",
    "AA_VERSIONS",
    "ATTACKS",
    "ATTACK_KINDS",
    "AttackFn",
    "AttackSpec",
    "MissingAutoAttackError",
    "Model",
    "NORMS",
    "PRESETS",
    "attack",
    "autoattack",
    "fgsm",
    "frozen_parameters",
    "logits_of",
    "pgd",
    "pgd_groups",
    "robust_accuracy",
]
