r"""PGD (Madry et al., 2018): signed-gradient ascent projected onto the L-inf ball.

.. math::
    x_0 = \mathrm{clip}_{[lo, hi]}(x + U(-\epsilon, \epsilon)) \quad \text{(random start)}

    x_{t+1} = \mathrm{clip}_{x,\epsilon}(x_t + \alpha \cdot \mathrm{sign}(\nabla_{x_t} L(f(x_t), y)))

where :math:`\mathrm{clip}_{x,\epsilon}` projects onto :math:`\{x' : \|x'-x\|_\infty \le
\epsilon\} \cap [lo, hi]^d` and :math:`L` is the mean cross-entropy (as torchattacks).
:func:`pgd_groups` attacks several batches through one model call per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from arnas_ray.attacks._common import (
    caller_format,
    logits_of,
    prepare,
    project,
    random_start,
    work_format,
)
from arnas_ray.attacks.registry import ATTACKS, Model
from arnas_ray.attacks.spec import AttackSpec

__all__ = ["pgd", "pgd_groups"]

GroupModel = Callable[[list[Tensor]], Sequence[Tensor]]
"""Computes the logits of several input batches in one call, one logits tensor per batch."""


def _run(model: Model, x: Tensor, y: Tensor, spec: AttackSpec, start: Tensor) -> Tensor:
    """``spec.steps`` signed-gradient ascent steps from ``start`` (already in the ball)."""
    return _run_groups(lambda xs: [logits_of(model(xs[0]))], [x], [y], spec, [start])[0]


def _run_groups(model_groups: GroupModel, xs: Sequence[Tensor], ys: Sequence[Tensor],
                spec: AttackSpec, starts: Sequence[Tensor]) -> list[Tensor]:
    """:func:`_run` on several batches whose logits one call computes: the summed loss
    has, for each batch, the gradient of that batch's own loss."""
    out_fmts = [caller_format(x) for x in xs]
    fmts = [work_format(x) for x in xs]
    xs = [x.contiguous(memory_format=f) for x, f in zip(xs, fmts)]
    x_advs = [s.detach().contiguous(memory_format=f) for s, f in zip(starts, fmts)]
    with torch.enable_grad():  # callers often evaluate under torch.no_grad()
        for _ in range(spec.steps):
            for xa in x_advs:
                xa.requires_grad_(True)
            logits = model_groups(x_advs)
            losses = [F.cross_entropy(lo, y) for lo, y in zip(logits, ys)]
            loss = losses[0] if len(losses) == 1 else torch.stack(losses).sum()
            grads = torch.autograd.grad(loss, x_advs)  # input gradients only: no param .grad
            del logits, losses, loss  # the graph goes now, not during the next step's forward
            # x_{t+1} = clip_{x,eps}(x_t + alpha * sign(grad)); the sign step is exact.
            x_advs = [project(torch.add(xa.detach(), g.sign(), alpha=spec.alpha), x, spec.eps,
                              spec.clip) for xa, g, x in zip(x_advs, grads, xs)]
    return [xa.detach().contiguous(memory_format=f) for xa, f in zip(x_advs, out_fmts)]


def pgd_groups(model_groups: GroupModel, xs: Sequence[Tensor], ys: Sequence[Tensor],
               spec: AttackSpec | None = None, *,
               generator: torch.Generator | None = None) -> list[Tensor]:
    """:func:`pgd` on several batches at once, through a model that computes the logits of
    all of them in one call (e.g. :meth:`arnas_ray.space.Supernet.forward_groups`).

    The result equals ``[pgd(model, x, y, spec, generator=generator) for x, y in zip(xs, ys)]``
    (random starts are drawn in the same order) when ``model_groups`` computes each batch's
    logits independently of the others. One restart only.

    Raises:
        ValueError: ``spec.restarts != 1``, or ``xs`` and ``ys`` differ in length.
    """
    if len(xs) != len(ys) or not xs:
        raise ValueError(f"pgd_groups needs as many label batches as input batches, got "
                         f"{len(xs)} and {len(ys)}")
    prepared = [prepare(x, y, spec, "pgd") for x, y in zip(xs, ys)]
    spec = prepared[0][2]
    if spec.restarts != 1:
        raise ValueError(f"pgd_groups runs one restart, got restarts={spec.restarts}")
    xs = [p[0] for p in prepared]
    starts = [random_start(x, spec, generator) for x in xs]
    return _run_groups(model_groups, xs, [p[1] for p in prepared], spec, starts)


def _explicit_start(x: Tensor, x_init: Tensor, spec: AttackSpec) -> Tensor:
    """``x_init`` projected into the ball and the clip range (bounds as tensors: exact for
    in-ball values)."""
    if x_init.shape != x.shape:
        raise ValueError(f"x_init must have the shape of x {tuple(x.shape)}, got "
                         f"{tuple(x_init.shape)}")
    start = torch.clamp(x_init.detach().to(x), x - spec.eps, x + spec.eps)
    return start.clamp_(spec.clip[0], spec.clip[1])


def _restarts(model: Model, x: Tensor, y: Tensor, spec: AttackSpec, best: Tensor,
              generator: torch.Generator | None) -> Tensor:
    """Restarts 2..n: per example the first perturbation that fools the model is kept,
    otherwise the one with the highest loss so far."""
    with torch.no_grad():
        logits = logits_of(model(best))
        best_loss = F.cross_entropy(logits, y, reduction="none")
        fooled = logits.argmax(dim=1) != y
    for _ in range(1, spec.restarts):
        if bool(fooled.all()):  # one sync per restart, never inside the step loop
            break
        x_adv = _run(model, x, y, spec, random_start(x, spec, generator))
        with torch.no_grad():
            logits = logits_of(model(x_adv))
            loss = F.cross_entropy(logits, y, reduction="none")
            wrong = logits.argmax(dim=1) != y
            take = ~fooled & (wrong | (loss > best_loss))  # [N]
            best = torch.where(take.view(-1, *([1] * (x.dim() - 1))), x_adv, best)
            best_loss = torch.where(take, loss, best_loss)
            fooled = fooled | wrong
    return best


@ATTACKS.register("pgd")
def pgd(
    model: Model,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec | None = None,
    *,
    generator: torch.Generator | None = None,
    x_init: Tensor | None = None,
) -> Tensor:
    """PGD in the paper 'Towards Deep Learning Models Resistant to Adversarial Attacks'
    [https://arxiv.org/abs/1706.06083]; the update is in the module docstring.

    Distance Measure : Linf

    Args:
        model: callable returning logits (or a tuple whose first element is the logits); its
            train/eval mode is used as set by the caller and left unchanged (the ARNAS search
            attacks in train mode, evaluation in eval mode).
        x: clean inputs ``[N, C, H, W]`` within ``spec.clip`` (``[0, 1]`` by default).
        y: integer labels ``[N]``.
        spec: eps, alpha, steps, random_start, restarts and clip; defaults to ``AttackSpec()``
            (PGD-7, eps 8/255, alpha 2/255).
        generator: seeds the random start (it may live on another device than ``x``). Without
            one the global RNG draws ``torch.empty_like(x).uniform_(-eps, eps)``, exactly as
            torchattacks does.
        x_init: explicit starting point of the first restart (projected into the ball), in place
            of the random start; for cross-checks against other implementations.

    Returns:
        Detached adversarial inputs ``[N, C, H, W]``, within ``eps`` of ``x`` and within ``clip``.

    Example:
        >>> from arnas_ray.attacks import PRESETS
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
        >>> x, y = torch.rand(2, 3, 4, 4), torch.tensor([1, 2])
        >>> g = torch.Generator().manual_seed(0)
        >>> x_adv = pgd(model, x, y, PRESETS["pgd20"], generator=g)
        >>> bool((x_adv - x).abs().max() <= PRESETS["pgd20"].eps + 1e-6)
        True
    """
    x, y, spec = prepare(x, y, spec, "pgd")
    start = (_explicit_start(x, x_init, spec) if x_init is not None
             else random_start(x, spec, generator))
    best = _run(model, x, y, spec, start)
    if spec.restarts == 1:
        return best
    return _restarts(model, x, y, spec, best, generator)
