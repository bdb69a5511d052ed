r"""Training objectives: Madry PGD-AT, TRADES and plain cross-entropy, in the registry ``LOSSES``.

Every objective has one signature, ``loss_fn(model, x, y, spec, *, generator=None)``, where
``spec`` is a :class:`LossSpec` (the crafting attack, the TRADES weight, the auxiliary
weight and the crafting mode): it takes the model in its training mode and returns a
:class:`LossOutput` whose ``loss`` is ready for ``backward()``. ``LOSSES`` is the one list of
retraining methods (``RetrainConfig.method``, the ``retrain --method`` flag). The adversarial examples are crafted with only input
gradients (no parameter ``.grad`` is touched) in the mode named by ``craft_mode``:

* ``"eval"`` (default): BN running statistics and no drop path while crafting, then the
  weights are trained in train mode. This is what the ``madry_loss`` and ``trades_loss`` the
  ARNAS reference imports (from the TRADES / AdvRush code) do: ``model.eval()`` while crafting,
  ``model.train()`` for the update. Crafting in eval mode also keeps the 7 attack forward
  passes from moving the BN running statistics.
* ``"train"``: batch statistics while crafting (as the ARNAS *search* attacks the supernet).

The mode the caller set is restored afterwards, also when a forward pass raises.

The auxiliary head (DARTS) is trained on the same input as the main loss of the objective:
the adversarial batch for PGD-AT, the natural batch for TRADES and natural training. (The
reference takes it from an extra forward pass on the natural batch in every case.)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arnas_ray._config import check, check_choice
from arnas_ray._registry import Registry
from arnas_ray.attacks import PRESETS, AttackSpec, attack, logits_of

__all__ = [
    "CRAFT_MODES",
    "LOSSES",
    "LossFn",
    "LossOutput",
    "LossSpec",
    "natural_loss",
    "pgd_at_loss",
    "trades_loss",
    "training_loss",
]

#: Mode the model is in while the training adversarial examples are crafted.
CRAFT_MODES: tuple[str, ...] = ("eval", "train")


@dataclass(frozen=True)
class LossSpec:
    """What a training objective reads besides the model and the batch.

    Attributes:
        attack: how the adversarial examples are crafted (PGD-7, eps 8/255, step 2/255);
            unused by ``natural``.
        trades_beta: weight of the TRADES KL term (6 in the paper); read by ``trades`` only.
        auxiliary_weight: weight of the auxiliary head's cross-entropy (0: not asked for).
        craft_mode: model mode while crafting, one of :data:`CRAFT_MODES` (module docstring).
    """

    attack: AttackSpec = field(default_factory=lambda: PRESETS["pgd7"])
    trades_beta: float = 6.0
    auxiliary_weight: float = 0.0
    craft_mode: str = "eval"

    def __post_init__(self) -> None:
        if not isinstance(self.attack, AttackSpec):
            raise TypeError(f"attack must be an AttackSpec, got {type(self.attack).__name__}")
        check(0 <= self.trades_beta < math.inf, "trades_beta", "0 <= trades_beta < inf",
              self.trades_beta)
        check(0 <= self.auxiliary_weight < math.inf, "auxiliary_weight",
              "0 <= auxiliary_weight < inf", self.auxiliary_weight)
        check_choice(self.craft_mode, CRAFT_MODES, "craft_mode")


@dataclass
class LossOutput:
    """What a training objective returns.

    Attributes:
        loss: scalar to minimise (auxiliary term included).
        logits: logits of the main term's input (for the training accuracy), ``[N, K]``.
        x_adv: the adversarial inputs used, or ``None`` for natural training, ``[N, C, H, W]``.
        parts: detached scalar components (``"natural"``, ``"robust"``, ``"auxiliary"``).
    """

    loss: Tensor
    logits: Tensor
    x_adv: Tensor | None = None
    parts: dict[str, Tensor] = field(default_factory=dict)


class LossFn(Protocol):
    """The one signature of every registered objective."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, spec: LossSpec = ..., *,
                 generator: torch.Generator | None = None) -> LossOutput: ...


#: Retraining objectives by method name: ``pgd-at``, ``trades``, ``natural``.
LOSSES: Registry[LossFn] = Registry("retrain method")


@contextlib.contextmanager
def _mode(model: nn.Module, craft_mode: str) -> Iterator[None]:
    """Put ``model`` in the crafting mode and restore its mode afterwards."""
    was_training = model.training
    model.train(craft_mode == "train")
    try:
        yield
    finally:
        model.train(was_training)


def _forward(model: nn.Module, x: Tensor, with_aux: bool) -> tuple[Tensor, Tensor | None]:
    """``(logits, aux_logits_or_None)``; asks for the auxiliary head only when it is weighted."""
    if with_aux:
        logits, aux = model(x, with_aux=True)
        return logits, aux
    return logits_of(model(x)), None


def _with_aux(loss: Tensor, aux: Tensor | None, y: Tensor, weight: float,
              parts: dict[str, Tensor]) -> Tensor:
    if aux is None or weight == 0:
        return loss
    aux_loss = F.cross_entropy(aux, y)
    parts["auxiliary"] = aux_loss.detach()
    return loss + weight * aux_loss


@LOSSES.register("pgd-at")
def pgd_at_loss(model: nn.Module, x: Tensor, y: Tensor, spec: LossSpec = LossSpec(), *,
                generator: torch.Generator | None = None) -> LossOutput:
    r"""Madry et al. (2018) adversarial training: cross-entropy on PGD examples.

    .. math:: \min_\theta \; \mathrm{CE}\big(f_\theta(x'), y\big), \quad
        x' = \mathrm{PGD}_{\epsilon}(f_\theta, x, y)

    Args:
        model: the network, in train mode (the update's forward pass runs in it).
        x: clean inputs ``[N, C, H, W]`` in ``spec.attack.clip``; y: labels ``[N]``.
        spec: the crafting attack, the auxiliary weight (on ``x'``) and the crafting mode.
        generator: seeds the attack's random start.

    Returns:
        The loss, the logits on ``x'`` and ``x'``.
    """
    with _mode(model, spec.craft_mode):
        x_adv = attack(model, x, y, spec.attack, generator=generator)
    logits, aux = _forward(model, x_adv, spec.auxiliary_weight > 0)
    loss = F.cross_entropy(logits, y)
    parts = {"robust": loss.detach()}
    return LossOutput(_with_aux(loss, aux, y, spec.auxiliary_weight, parts), logits, x_adv,
                      parts)


def _kl(logits_adv: Tensor, p_natural: Tensor, reduction: str) -> Tensor:
    """``KL(p_natural || softmax(logits_adv))`` (``F.kl_div`` takes the log-probabilities first)."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), p_natural, reduction=reduction)


def _trades_adversary(model: nn.Module, x: Tensor, spec: AttackSpec,
                      generator: torch.Generator | None) -> Tensor:
    """TRADES' inner maximisation of the summed KL, from ``x + 0.001 * randn`` (official code)."""
    low, high = spec.clip
    with torch.no_grad():
        p_natural = F.softmax(logits_of(model(x)), dim=1)  # [N, K], a fixed target
    if generator is None:
        noise = torch.randn_like(x)
    else:
        noise = torch.randn(x.shape, dtype=x.dtype, device=generator.device,
                            generator=generator).to(x.device)
    x_adv = (x + 0.001 * noise).clamp_(low, high)
    with torch.enable_grad():
        for _ in range(spec.steps):
            x_adv.requires_grad_(True)
            kl = _kl(logits_of(model(x_adv)), p_natural, "sum")
            (grad,) = torch.autograd.grad(kl, x_adv)  # input gradient only
            x_adv = x_adv.detach() + spec.alpha * grad.sign()
            x_adv = (x + (x_adv - x).clamp_(-spec.eps, spec.eps)).clamp_(low, high)
    return x_adv.detach()


@LOSSES.register("trades")
def trades_loss(model: nn.Module, x: Tensor, y: Tensor, spec: LossSpec = LossSpec(), *,
                generator: torch.Generator | None = None) -> LossOutput:
    r"""TRADES (Zhang et al., ICML 2019, https://arxiv.org/abs/1901.08573).

    .. math::
        x' = \arg\max_{\|x' - x\|_\infty \le \epsilon}
            \mathrm{KL}\big(\sigma(f(x)) \,\|\, \sigma(f(x'))\big)

        L = \mathrm{CE}(f(x), y) + \beta \cdot \tfrac{1}{N}\sum_i
            \mathrm{KL}\big(\sigma(f(x_i)) \,\|\, \sigma(f(x'_i))\big)

    The inner maximisation follows the official code: start at ``x + 0.001 * randn`` (whatever
    ``spec.attack.random_start`` says), then ``spec.attack.steps`` signed-gradient steps of
    size ``alpha`` on the summed KL, each projected onto the eps-ball and ``clip``. The KL of
    the loss compares the natural logits with the logits of the **adversarial** input ``x'``
    (the ARNAS reference compared natural with natural, a term that is always zero).

    Args:
        model: the network, in train mode.
        x: clean inputs ``[N, C, H, W]`` in ``spec.attack.clip``; y: labels ``[N]``.
        spec: ``trades_beta`` (beta), the attack of the inner maximisation, the auxiliary
            weight (on ``x``) and the crafting mode.
        generator: seeds the start noise.

    Returns:
        The loss, the natural logits, ``x'`` and the parts ``natural`` (CE) and ``robust`` (KL).
    """
    x = x.detach()
    with _mode(model, spec.craft_mode):
        x_adv = _trades_adversary(model, x, spec.attack, generator)
    logits, aux = _forward(model, x, spec.auxiliary_weight > 0)
    logits_adv, _ = _forward(model, x_adv, False)
    loss_natural = F.cross_entropy(logits, y)
    # batchmean: the KL summed over classes, averaged over examples (TRADES' 1/N * sum)
    loss_robust = _kl(logits_adv, F.softmax(logits, dim=1), "batchmean")
    parts = {"natural": loss_natural.detach(), "robust": loss_robust.detach()}
    loss = _with_aux(loss_natural + spec.trades_beta * loss_robust, aux, y,
                     spec.auxiliary_weight, parts)
    return LossOutput(loss, logits, x_adv, parts)


@LOSSES.register("natural")
def natural_loss(model: nn.Module, x: Tensor, y: Tensor, spec: LossSpec = LossSpec(), *,
                 generator: torch.Generator | None = None) -> LossOutput:
    """Cross-entropy on the clean batch (the undefended baseline).

    Args:
        model: the network, in train mode.
        x: inputs ``[N, C, H, W]``; y: labels ``[N]``.
        spec: only ``auxiliary_weight`` is read.
        generator: unused (nothing is random); accepted for the common signature.
    """
    del generator
    logits, aux = _forward(model, x, spec.auxiliary_weight > 0)
    loss = F.cross_entropy(logits, y)
    parts = {"natural": loss.detach()}
    return LossOutput(_with_aux(loss, aux, y, spec.auxiliary_weight, parts), logits, None, parts)


def training_loss(method: str, model: nn.Module, x: Tensor, y: Tensor, spec: LossSpec, *,
                  generator: torch.Generator | None = None) -> LossOutput:
    """The objective ``LOSSES[method]`` on one batch.

    Raises:
        SpecError: ``method`` is not registered (a ``ValueError`` naming the valid methods).
    """
    check_choice(method, tuple(LOSSES), "method")
    return LOSSES[method](model, x, y, spec, generator=generator)
