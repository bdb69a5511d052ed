"""AutoAttack (Croce & Hein, 2020) through the official ``pyautoattack`` package.

The standard version runs APGD-CE, APGD-T (9 target classes), FAB-T and Square (5000
queries) in sequence, each on the points still classified correctly. The adapter rescales the
input domain ``spec.clip`` to ``[0, 1]``, hands AutoAttack a logits-only model, freezes the
parameters (FAB calls ``.backward()``) and restores the caller's global RNG state (AutoAttack
reseeds it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from arnas_ray.attacks._common import frozen_model, logits_of, prepare, project, work_format
from arnas_ray.attacks.registry import ATTACKS, Model
from arnas_ray.attacks.spec import AttackSpec, check_aa_attacks

__all__ = ["MissingAutoAttackError", "autoattack"]


class MissingAutoAttackError(ImportError):
    """The optional ``pyautoattack`` package (official AutoAttack) is not installed."""


class _AutoAttackModel(nn.Module):
    """What the official AutoAttack sees: logits only, on inputs rescaled to ``[0, 1]``."""

    def __init__(self, model: Model, low: float, scale: float, dtype: torch.dtype) -> None:
        super().__init__()
        self._model = [model]  # a list: do not register it as a submodule (no .train()/.to())
        self.low, self.scale, self.dtype = low, scale, dtype

    def forward(self, z: Tensor) -> Tensor:
        x = (z * self.scale + self.low).to(self.dtype)
        out = logits_of(self._model[0](x.contiguous(memory_format=work_format(x))))
        return out.to(z.dtype)


def _set_n_iter(attacker: Any, n_iter: int) -> None:
    """Override the iterations of an APGD/FAB object, with APGD's derived checkpoints."""
    attacker.n_iter = n_iter
    if hasattr(attacker, "n_iter_orig"):  # APGD
        attacker.n_iter_orig = n_iter
        attacker.n_iter_2 = max(int(0.22 * n_iter), 1)
        attacker.n_iter_min = max(int(0.06 * n_iter), 1)
        attacker.size_decr = max(int(0.03 * n_iter), 1)


def _import_autoattack() -> Any:
    try:
        from pyautoattack import AutoAttack
    except ImportError as exc:
        raise MissingAutoAttackError(
            "AutoAttack needs the optional package 'pyautoattack' (official AutoAttack); "
            "install it with: pip install 'arnas-ray[attacks]'"
        ) from exc
    return AutoAttack


def _version_and_attacks(spec: AttackSpec, version: str | None, attacks: Sequence[str] | None
                         ) -> tuple[str, list[str] | None]:
    """The AutoAttack version and attack list (``None`` unless ``custom``), checked."""
    if attacks is not None:
        version, names = "custom", list(attacks)
    else:
        version = version or spec.version
        names = list(spec.aa_attacks) if version == "custom" else []
    check_aa_attacks(version, names, "aa_attacks")
    return version, (names if version == "custom" else None)


def _adversary(auto_attack: Any, wrapped: nn.Module, spec: AttackSpec, scale: float,
               device: torch.device, *, version: str, attacks: list[str] | None, seed: int,
               n_iter: int | None, n_queries: int | None) -> Any:
    """The official ``AutoAttack`` object, with the test-only iteration overrides applied."""
    adversary = auto_attack(wrapped, attacks=attacks, device=device, eps=spec.eps / scale,
                            norm="Linf", seed=seed, version=version)
    if n_iter is not None:
        for attacker in (adversary.apgd, adversary.apgd_targeted, adversary.fab):
            _set_n_iter(attacker, n_iter)
    if n_queries is not None:
        adversary.square.n_queries = n_queries
    return adversary


@ATTACKS.register("autoattack")
def autoattack(model: Model, x: Tensor, y: Tensor, spec: AttackSpec | None = None, *,
               generator: torch.Generator | None = None, version: str | None = None,
               attacks: Sequence[str] | None = None, seed: int | None = None,
               n_iter: int | None = None, n_queries: int | None = None,
               batch_size: int = 250) -> Tensor:
    """AutoAttack in the paper 'Reliable evaluation of adversarial robustness with an ensemble
    of diverse parameter-free attacks' [https://arxiv.org/abs/2003.01690], through the
    official implementation (``pip install 'arnas-ray[attacks]'``); see the module docstring.

    Distance Measure : Linf

    Args:
        model: callable returning logits (or a tuple whose first element is the logits); its
            mode is left as the caller set it (evaluate in eval mode); no parameter ``.grad``
            is written.
        x: clean inputs ``[N, C, H, W]`` within ``spec.clip``; y: integer labels ``[N]``.
        spec: eps, clip, version and aa_attacks; defaults to ``AttackSpec(kind="autoattack")``.
        generator: when ``seed`` is None, the AutoAttack seed is drawn from it (0 without one).
        version: overrides ``spec.version``; attacks: overrides ``spec.aa_attacks`` (implies
            ``version="custom"``).
        seed: the AutoAttack seed; the caller's global RNG state is restored afterwards.
        n_iter, n_queries: override the APGD/FAB iterations (100) and Square's queries (5000);
            for tests.
        batch_size: AutoAttack's internal batch size.

    Returns:
        Detached adversarial inputs ``[N, C, H, W]``, within ``eps`` of ``x`` and within ``clip``.

    Raises:
        MissingAutoAttackError: ``pyautoattack`` is not installed (an ``ImportError``).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
        >>> x, y = torch.rand(2, 3, 4, 4), torch.tensor([1, 2])
        >>> x_adv = autoattack(model.eval(), x, y)  # doctest: +SKIP
    """
    x, y, spec = prepare(x, y, spec, "autoattack")
    auto_attack = _import_autoattack()  # a missing package is reported before anything else
    version, names = _version_and_attacks(spec, version, attacks)
    if seed is None:
        seed = 0 if generator is None else int(
            torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device))
    if x.shape[0] == 0:
        return x.clone()
    low, high = spec.clip
    scale = high - low
    adversary = _adversary(auto_attack, _AutoAttackModel(model, low, scale, x.dtype), spec, scale,
                           x.device,
                           version=version, attacks=names, seed=seed, n_iter=n_iter,
                           n_queries=n_queries)
    z = ((x - low) / scale).float()
    cuda = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), frozen_model(model):  # AutoAttack reseeds
        z_adv, _ = adversary.run_standard_evaluation(z, y, batch_size=batch_size)
    x_adv = z_adv.detach().to(x.dtype) * scale + low
    return project(x_adv, x, spec.eps, spec.clip)
