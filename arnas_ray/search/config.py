"""``SearchConfig``: every knob of one ARNAS search, validated at construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from arnas_ray._config import check, check_choice, from_dict, to_dict
from arnas_ray.attacks import AttackSpec
from arnas_ray.errors import SpecError
from arnas_ray.search.mgda import NORMALIZATIONS
from arnas_ray.space.layout import Layout
from arnas_ray.space.ops import DARTS_PRIMITIVES, PRIMITIVES

__all__ = ["AMP_MODES", "NORMALIZATIONS", "ORDERS", "PRIMITIVE_SETS", "STRATEGIES", "SearchConfig"]

ORDERS: tuple[str, ...] = ("first", "second", "exact")
STRATEGIES: tuple[str, ...] = ("mgda", "fixed", "natural", "adversarial")
AMP_MODES: tuple[str, ...] = ("off", "bf16")
PRIMITIVE_SETS: dict[str, tuple[str, ...]] = {"arnas": PRIMITIVES, "darts": DARTS_PRIMITIVES}


def _pgd7() -> AttackSpec:
    return AttackSpec(kind="pgd", steps=7)


@dataclass(frozen=True)
class SearchConfig:
    """One ARNAS search. Defaults are the paper's CIFAR-10 settings (ARNAS.md), except the
    width, depth and epochs, which default to a small search that runs on a laptop.

    Attributes:
        placement: a layout preset name (``arnas``, ``darts``, ``robust-first`` ...) or a list of
            cell types, one per stage.
        channel_ratios: per-stage width multipliers (default: the preset's).
        equal_width: rescale ``channels`` so the sum of stage widths equals that of
            ``width_reference`` at ``channels`` (fair channel-ratio ablations).
        order: ``first`` (gradient at the current weights), ``second`` (DARTS unrolled step with
            a finite-difference Hessian-vector product) or ``exact`` (the same unrolled
            hypergradient by double backward; slow, for tests).
        strategy: ``mgda`` (ARNAS), ``fixed`` (``fixed_weights`` = (w_nat, w_adv)),
            ``natural`` or ``adversarial`` (one objective).
        adv_coef: scale of the adversarial objective before combination (ARNAS: 0.1).
        warmup_adv_epochs: adversarial-only architecture updates for the first epochs.
        fd_radius: ``r * ||v||`` of the ``second``-order finite-difference Hessian-vector
            product (DARTS, ARNAS: 0.01); ``benchmarks/hypergrad.py`` measures its error.
        diagnostics: record, per architecture step, gamma, the hypergradient norms, their
            cosine and the descent check (``SearchResult.steps``, ``steps.jsonl``) and their
            per-epoch summaries in the metrics (:mod:`arnas_ray._diagnostics`); off: only gamma.
        steps_per_epoch: cap on search steps per epoch (``None``: a full pass).
        eval_samples: held-out examples for the per-epoch natural / PGD-10 accuracy.
        pair_attacks: run the step's two PGD attacks (training and validation batch) as one
            pass per PGD step, the batches stacked along the channels with their own batch
            statistics (:meth:`arnas_ray.space.Supernet.forward_groups`): the same adversarial
            examples, measured 1.5x faster per attack pass on CPU. Used with fused ops, equal
            batch shapes, one restart and no ``compile``. Batch-norm running statistics get
            the same number of updates as with separate passes, interleaved (training batch,
            validation batch, per PGD step) rather than one attack after the other; they
            only enter the per-epoch eval-mode accuracies, never the search.
    """

    placement: str | tuple[str, ...] = "arnas"
    channel_ratios: tuple[float, ...] | None = None
    equal_width: bool = False
    width_reference: str = "arnas"
    channels: int = 8
    cells: int = 5
    primitives: str = "arnas"
    epochs: int = 10
    batch_size: int = 32
    train_portion: float = 0.5
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    order: str = "second"
    strategy: str = "mgda"
    fixed_weights: tuple[float, float] = (1.0, 1.0)
    adv_coef: float = 0.1
    normalization: str = "none"
    warmup_adv_epochs: int = 0
    fd_radius: float = 0.01
    diagnostics: bool = True
    attack: AttackSpec = field(default_factory=_pgd7)
    eval_attack_steps: int = 10
    eval_samples: int = 500
    steps_per_epoch: int | None = None
    seed: int = 2
    fused: bool = True
    channels_last: bool = True
    amp: str = "off"
    compile: bool = False
    pair_attacks: bool = True

    def __post_init__(self) -> None:
        # sequences given as lists (Python callers) are stored as tuples: hashable, and equal
        # to what from_dict builds
        if isinstance(self.placement, list):
            object.__setattr__(self, "placement", tuple(self.placement))
        if self.channel_ratios is not None and not isinstance(self.channel_ratios, tuple):
            object.__setattr__(self, "channel_ratios", tuple(self.channel_ratios))
        if self.channel_ratios is not None:
            check(all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in self.channel_ratios),
                  "channel_ratios", "channel_ratios are numbers", self.channel_ratios)
            object.__setattr__(self, "channel_ratios", tuple(float(r) for r in self.channel_ratios))
        for name in ("arch_betas", "fixed_weights"):
            value = getattr(self, name)
            check(len(value) == 2, name, f"len({name}) == 2", value)
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        for name in ("channels", "cells", "epochs", "batch_size", "eval_samples"):
            check(getattr(self, name) > 0, name, f"{name} > 0", getattr(self, name))
        check(self.channels % 2 == 0, "channels", "channels % 2 == 0", self.channels)
        check(0.0 < self.train_portion < 1.0, "train_portion", "0 < train_portion < 1", self.train_portion)
        for name in ("lr", "arch_lr"):
            check(getattr(self, name) > 0, name, f"{name} > 0", getattr(self, name))
        check(0 < self.fd_radius < math.inf, "fd_radius", "0 < fd_radius < inf", self.fd_radius)
        for name in ("lr_min", "weight_decay", "arch_weight_decay", "adv_coef", "grad_clip"):
            check(getattr(self, name) >= 0, name, f"{name} >= 0", getattr(self, name))
        check(0.0 <= self.momentum < 1.0, "momentum", "0 <= momentum < 1", self.momentum)
        check(all(0.0 <= b < 1.0 for b in self.arch_betas), "arch_betas", "0 <= beta < 1", self.arch_betas)
        check(all(w >= 0 for w in self.fixed_weights) and sum(self.fixed_weights) > 0, "fixed_weights",
              "weights >= 0 with a positive sum", self.fixed_weights)
        check_choice(self.order, ORDERS, "order")
        check_choice(self.strategy, STRATEGIES, "strategy")
        check_choice(self.normalization, NORMALIZATIONS, "normalization")
        check_choice(self.amp, AMP_MODES, "amp")
        check_choice(self.primitives, tuple(PRIMITIVE_SETS), "primitives")
        check(self.warmup_adv_epochs >= 0, "warmup_adv_epochs", "warmup_adv_epochs >= 0", self.warmup_adv_epochs)
        check(self.eval_attack_steps >= 0, "eval_attack_steps", "eval_attack_steps >= 0", self.eval_attack_steps)
        if self.steps_per_epoch is not None:
            check(self.steps_per_epoch > 0, "steps_per_epoch", "steps_per_epoch > 0", self.steps_per_epoch)
        if self.attack.kind != "pgd":
            raise SpecError("attack.kind", f"the search attacks with PGD; got {self.attack.kind!r}, expected 'pgd'")
        layout = self.layout()  # validates placement / ratios
        check(self.cells >= len(layout.stages), "cells", f"cells >= number of stages ({len(layout.stages)})",
              self.cells)
        if self.equal_width:
            width = self.width()
            check(width >= 2 and width % 2 == 0, "channels",
                  f"an even rescaled width >= 2 with equal_width (got {width})", self.channels)

    def layout(self) -> Layout:
        return Layout.from_spec(self.placement, self.channel_ratios)

    def width(self) -> int:
        """Base width C after the optional equal-width-budget rescaling."""
        if not self.equal_width:
            return self.channels
        return self.layout().rescaled_C(self.channels, self.width_reference)

    def primitive_names(self) -> tuple[str, ...]:
        return PRIMITIVE_SETS[self.primitives]

    @classmethod
    def from_dict(cls, data: Any, *, path: str = "") -> SearchConfig:
        return from_dict(cls, data, path=path)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = to_dict(self)
        return out
