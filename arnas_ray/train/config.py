"""``RetrainConfig``: every knob of the adversarial retraining, validated at construction.

The defaults are the ARNAS paper's CIFAR-10 recipe (see ``shared/ARNAS.md``): SGD lr 0.1,
momentum 0.9, weight decay 1e-4, x0.1 at 50 % and 75 % of 200 epochs, gradient clipping 5,
auxiliary head with weight 0.4, cutout 16, drop path 0, batch 32, PGD-7 adversarial training at
eps 8/255 with step 2/255 and a random start. Build one from YAML or CLI flags with
``from_dict(RetrainConfig, mapping)`` (unknown keys are refused by name; a nested ``attack``
mapping becomes an :class:`~arnas_ray.attacks.AttackSpec`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from arnas_ray._config import check, check_choice
from arnas_ray.attacks import PRESETS, AttackSpec
from arnas_ray.errors import SpecError
from arnas_ray.space import Layout
from arnas_ray.train.losses import CRAFT_MODES, LOSSES, LossSpec

__all__ = [
    "AMP_MODES",
    "CRAFT_MODES",
    "METHODS",
    "SCHEDULES",
    "SELECT_ON",
    "TRAIN_ATTACK_KINDS",
    "RetrainConfig",
]

#: Training objectives (the names of the loss registry ``LOSSES``): Madry PGD-AT, TRADES
#: (Zhang et al. 2019), and plain (undefended) training.
METHODS: tuple[str, ...] = tuple(LOSSES)
SCHEDULES: tuple[str, ...] = ("step", "cosine")
#: Model selection metric on the held-out val split.
SELECT_ON: tuple[str, ...] = ("pgd", "natural")
AMP_MODES: tuple[str, ...] = ("off", "bf16")
#: Attack kinds usable to craft training examples and for per-epoch validation.
TRAIN_ATTACK_KINDS: tuple[str, ...] = ("pgd", "fgsm")


@dataclass(frozen=True)
class RetrainConfig:
    """Adversarial retraining of a discrete network (defaults: the paper's CIFAR recipe).

    Attributes:
        placement: layout preset name (``"arnas"``, ``"darts"``...) or explicit stage cell types.
        channel_ratios: per-stage channel multipliers; ``None`` keeps the preset's.
        channels: base width C. cells: number of cells L.
        epochs: training epochs. batch_size: training batch size.
        lr: initial SGD learning rate; momentum, weight_decay: SGD settings.
        schedule: ``"step"`` (x ``lr_gamma`` at each of ``milestones``, fractions of ``epochs``)
            or ``"cosine"`` (annealed to 0 over ``epochs``).
        grad_clip: max global gradient norm (0 turns clipping off).
        auxiliary: train with the DARTS auxiliary head; auxiliary_weight: its loss weight.
        cutout: Cutout side for the training data (the caller loads the data with it).
        drop_path_prob: final drop-path rate, increased linearly from 0 (DARTS).
        method: ``"pgd-at"``, ``"trades"`` or ``"natural"`` (no adversarial examples).
        trades_beta: weight of the TRADES KL term.
        attack: how training examples are crafted (PGD-7, eps 8/255, step 2/255, random start).
        craft_mode: mode of the model while crafting: ``"eval"`` (BN running statistics, no drop
            path; as the ``madry_loss``/``trades_loss`` the reference imports) or ``"train"``.
        seed: seeds the initial weights, the data order, the attacks' random starts.
        steps_per_epoch: at most this many optimiser steps per epoch (``None``: a full pass).
        eval_attack: attack of the per-epoch validation (PGD-20).
        select_on: model selection metric on the val split: ``"pgd"`` or ``"natural"`` accuracy.
        val_samples: at most this many val examples per validation (``None``: all).
        amp: ``"bf16"`` runs forward passes under bfloat16 autocast.
        channels_last: use the channels-last memory format.
        num_workers: data loader worker processes.
    """

    placement: str | tuple[str, ...] = "arnas"
    channel_ratios: tuple[float, ...] | None = None
    channels: int = 36
    cells: int = 20
    epochs: int = 200
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    milestones: tuple[float, ...] = (0.5, 0.75)
    lr_gamma: float = 0.1
    grad_clip: float = 5.0
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    cutout: int = 16
    drop_path_prob: float = 0.0
    method: str = "pgd-at"
    trades_beta: float = 6.0
    attack: AttackSpec = field(default_factory=lambda: PRESETS["pgd7"])
    craft_mode: str = "eval"
    seed: int = 0
    steps_per_epoch: int | None = None
    eval_attack: AttackSpec = field(default_factory=lambda: PRESETS["pgd20"])
    select_on: str = "pgd"
    val_samples: int | None = 1000
    amp: str = "off"
    channels_last: bool = False
    num_workers: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.placement, list):  # accept lists from Python callers
            object.__setattr__(self, "placement", tuple(self.placement))
        if isinstance(self.channel_ratios, list):
            object.__setattr__(self, "channel_ratios", tuple(self.channel_ratios))
        if isinstance(self.milestones, list):
            object.__setattr__(self, "milestones", tuple(self.milestones))
        check(self.channels >= 2, "channels", "channels >= 2", self.channels)
        check(self.epochs >= 1, "epochs", "epochs >= 1", self.epochs)
        check(self.batch_size >= 2, "batch_size", "batch_size >= 2", self.batch_size)
        check(0 < self.lr < math.inf, "lr", "0 < lr < inf", self.lr)
        check(0 <= self.momentum < 1, "momentum", "0 <= momentum < 1", self.momentum)
        check(self.weight_decay >= 0, "weight_decay", "weight_decay >= 0", self.weight_decay)
        check_choice(self.schedule, SCHEDULES, "schedule")
        for i, m in enumerate(self.milestones):
            check(0 < m < 1, f"milestones[{i}]", "0 < milestone < 1 (a fraction of epochs)", m)
        check(
            list(self.milestones) == sorted(self.milestones),
            "milestones",
            "milestones sorted ascending",
            self.milestones,
        )
        check(0 < self.lr_gamma <= 1, "lr_gamma", "0 < lr_gamma <= 1", self.lr_gamma)
        check(self.grad_clip >= 0, "grad_clip", "grad_clip >= 0", self.grad_clip)
        check(
            self.auxiliary_weight >= 0, "auxiliary_weight", "auxiliary_weight >= 0",
            self.auxiliary_weight,
        )
        check(self.cutout >= 0, "cutout", "cutout >= 0", self.cutout)
        check(0 <= self.drop_path_prob < 1, "drop_path_prob", "0 <= drop_path_prob < 1",
              self.drop_path_prob)
        check_choice(self.method, METHODS, "method")
        check(self.trades_beta >= 0, "trades_beta", "trades_beta >= 0", self.trades_beta)
        for name in ("attack", "eval_attack"):
            spec = getattr(self, name)
            if not isinstance(spec, AttackSpec):
                raise SpecError(name, f"expected an AttackSpec, got {type(spec).__name__}")
            check_choice(spec.kind, TRAIN_ATTACK_KINDS, f"{name}.kind")
        check_choice(self.craft_mode, CRAFT_MODES, "craft_mode")
        check(self.seed >= 0, "seed", "seed >= 0", self.seed)
        check(self.steps_per_epoch is None or self.steps_per_epoch >= 1, "steps_per_epoch",
              "steps_per_epoch is None or steps_per_epoch >= 1", self.steps_per_epoch)
        check_choice(self.select_on, SELECT_ON, "select_on")
        check(self.val_samples is None or self.val_samples >= 1, "val_samples",
              "val_samples is None or val_samples >= 1", self.val_samples)
        check_choice(self.amp, AMP_MODES, "amp")
        check(self.num_workers >= 0, "num_workers", "num_workers >= 0", self.num_workers)
        layout = self.layout()  # raises SpecError naming placement / channel_ratios
        check(
            self.cells >= len(layout.stages), "cells",
            f"cells >= number of stages ({len(layout.stages)})", self.cells,
        )

    def loss_spec(self) -> LossSpec:
        """What the training objective reads (the auxiliary weight is 0 without the head)."""
        return LossSpec(attack=self.attack, trades_beta=self.trades_beta,
                        auxiliary_weight=self.auxiliary_weight if self.auxiliary else 0.0,
                        craft_mode=self.craft_mode)

    def layout(self) -> Layout:
        """The :class:`~arnas_ray.space.Layout` of ``placement`` and ``channel_ratios``."""
        placement = self.placement if isinstance(self.placement, str) else list(self.placement)
        ratios = None if self.channel_ratios is None else list(self.channel_ratios)
        return Layout.from_spec(placement, ratios)
