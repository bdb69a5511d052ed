"""Architecture gradients of the ARNAS search: per-objective hypergradients and their combination.

Two objectives on a validation batch: ``f1 = CE(model(x_val), y_val)`` (natural) and
``f2 = adv_coef * CE(model(x_val_adv), y_val)`` (adversarial, ARNAS: ``adv_coef = 0.1``).

Orders (DARTS):

* ``first``: ``u_i = d f_i(w, a) / d a`` at the current weights.
* ``second``: one unrolled weight step on the (adversarial) training batch,
  ``w' = w - eta * (mu * buf + dL_train(w, a)/dw + wd * w)``, computed ONCE and shared by
  both objectives (the reference recomputes it per objective; the mathematics is the same),
  then ``u_i = d_a f_i(w', a) - eta * H v_i`` with ``v_i = d f_i(w', a) / d w'`` and the
  Hessian-vector product ``H v = d^2 L_train / (da dw) v`` by central finite differences::

      H v ~= ( d_a L_train(w + r v, a) - d_a L_train(w - r v, a) ) / (2 r),  r = 0.01 / ||v||

* ``exact``: ``d f_i(w'(a), a) / d a`` with the same unrolled ``w'(a)``, by double backward
  (slow; the reference the tests compare ``second`` against).

Strategies combine ``u_nat`` and ``u_adv`` into the update ``d``: ``mgda`` takes the min-norm
point of their convex hull (:mod:`arnas_ray.search.mgda`), ``fixed`` ``w_nat u_nat + w_adv
u_adv``, ``natural``/``adversarial`` one objective only (the other is not computed).

All passes go through ``torch.func.functional_call`` with substituted parameters: nothing
mutates ``p.data``, and the model's BN running statistics are not touched by these passes
(they run on a copy of the buffers; in train mode BN normalises with batch statistics, so the
copy changes no result). Each pass asks autograd only for the gradients it needs: the
unrolled pass for weight gradients, the Hessian-vector passes for alpha gradients only.
A forward pass count per step (second order, two objectives): 1 unrolled + 2 validation +
4 Hessian-vector = 7. With ``stack_passes`` (the default, on a fused supernet) the two
validation passes run as one stacked pass, and so do each objective's two Hessian-vector
passes: 1 + 3 stacked (first order: separate passes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from arnas_ray._config import check_choice
from arnas_ray.search._amp import upcast as _upcast
from arnas_ray.search._stacked import StackedPasses
from arnas_ray.search._stacked import grad as _grad
from arnas_ray.search.config import ORDERS, STRATEGIES
from arnas_ray.search.diagnostics import step_vector
from arnas_ray.search.mgda import NORMALIZATIONS, mgda_weights
from arnas_ray.space.supernet import ALPHA_PREFIX, frozen_running_stats

__all__ = ["ArchBatch", "ArchStats", "Architect"]

FD_RADIUS = 0.01  # finite-difference radius numerator (DARTS, ARNAS): r = FD_RADIUS / ||v||

Grads = list[Tensor]


@dataclass
class ArchBatch:
    """Inputs of one architecture step (all on the model's device).

    ``x_train`` is the (adversarial) training batch that defines the unrolled step and the
    Hessian; ``x_val`` the clean validation batch; ``x_val_adv`` its PGD version (may be
    ``None`` when no adversarial objective is computed).
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_val_adv: Tensor | None = None


@dataclass
class ArchStats:
    """What one architecture step computed (0-d tensors; no host sync was made)."""

    gamma: Tensor  # weight of the natural objective in the combined update
    loss_nat: Tensor | None  # natural objective f1 (None when not computed)
    loss_adv: Tensor | None  # adversarial objective f2 = adv_coef * CE (None when not computed)
    grad_norm: Tensor  # L2 norm of the combined update direction (non-finite: divergence)
    # the step's STEP_FIELDS (arnas_ray._diagnostics) as one 1-d tensor; None with diagnostics off
    diagnostics: Tensor | None = None


class Architect:
    """Computes and applies architecture updates for a :class:`~arnas_ray.space.Supernet`.

    Args:
        model: the supernet (alphas are its ``alphas.*`` parameters).
        order: ``first``, ``second`` or ``exact`` (module docstring).
        strategy: ``mgda``, ``fixed``, ``natural`` or ``adversarial``.
        adv_coef: scale of the adversarial objective.
        fixed_weights: ``(w_nat, w_adv)`` for ``strategy="fixed"``.
        normalization: MGDA gradient normalisation (``none``, ``l2``, ``loss``, ``loss+``).
        lr: Adam learning rate of the alphas (ARNAS: 3e-4).
        betas: Adam betas (ARNAS: (0.5, 0.999)).
        weight_decay: Adam weight decay (ARNAS: 1e-3).
        w_momentum: the weight optimiser's momentum (for the unrolled step).
        w_weight_decay: the weight optimiser's weight decay (for the unrolled step).
        autocast: a context-manager factory wrapping forward passes (mixed precision) or None.
        fd_radius: ``r * ||v||`` of the finite-difference Hessian-vector product (DARTS and
            ARNAS: 0.01). ReLU and max-pool make the alpha gradient piecewise smooth in the
            weights, so at this radius the product carries the error of the kinks it crosses;
            ``order="exact"`` has none.
        diagnostics: measure, at every :meth:`step`, gamma, the hypergradient norms, their
            cosine and the descent check (:mod:`arnas_ray.search.diagnostics`; a few tensor
            ops on the alphas, no host sync) into ``ArchStats.diagnostics``.
        stack_passes: in second order, where the supernet can stack batches (fused, training
            mode), run pairs of passes as one pass of two stacked batches, each block with its
            own weights (:mod:`arnas_ray.search._stacked`; same mathematics): each Hessian-vector
            product's two finite-difference passes, and the two objectives' validation passes.
            On a 2-core CPU one stacked pass asking for alpha gradients cost 0.52-0.67 s
            against 0.73-0.87 s for two (``benchmarks/RESULTS.md``).

    Attributes:
        last_stats: the :class:`ArchStats` of the most recent :meth:`step` (None before).

    Example:
        >>> from arnas_ray.space import Layout, Supernet
        >>> net = Supernet(Layout.preset("arnas"), C=4, num_classes=10, cells=4)
        >>> arch = Architect(net, order="second", strategy="mgda")
        >>> x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,))
        >>> stats = arch.step(ArchBatch(x, y, x, y, x), eta=0.025)
        >>> 0.0 <= float(stats.gamma) <= 1.0
        True
    """

    def __init__(self, model: nn.Module, *, order: str = "second", strategy: str = "mgda",
                 adv_coef: float = 0.1, fixed_weights: tuple[float, float] = (1.0, 1.0),
                 normalization: str = "none", lr: float = 3e-4,
                 betas: tuple[float, float] = (0.5, 0.999), weight_decay: float = 1e-3,
                 w_momentum: float = 0.9, w_weight_decay: float = 3e-4,
                 autocast: Callable[[], contextlib.AbstractContextManager[None]] | None = None,
                 fd_radius: float = FD_RADIUS, diagnostics: bool = True, stack_passes: bool = True):
        check_choice(order, ORDERS, "order")
        check_choice(strategy, STRATEGIES, "strategy")
        check_choice(normalization, NORMALIZATIONS, "normalization")
        self.model = model
        self.order, self.strategy = order, strategy
        self.adv_coef, self.fixed_weights, self.normalization = adv_coef, fixed_weights, normalization
        self.w_momentum, self.w_weight_decay = w_momentum, w_weight_decay
        self._autocast = autocast
        if not fd_radius > 0:
            raise ValueError(f"`fd_radius > 0` must hold, but got fd_radius={fd_radius!r}")
        self.fd_radius = fd_radius
        self.diagnostics = diagnostics
        self.stack_passes = stack_passes
        self.last_stats: ArchStats | None = None
        named = list(model.named_parameters())
        self.alpha_names = [n for n, _ in named if n.startswith(ALPHA_PREFIX)]
        self.alphas = [p for n, p in named if n.startswith(ALPHA_PREFIX)]
        self.weight_names = [n for n, _ in named if not n.startswith(ALPHA_PREFIX)]
        self.weights = [p for n, p in named if not n.startswith(ALPHA_PREFIX)]
        if not self.alphas:
            raise ValueError(f"the model has no architecture parameters (names starting with {ALPHA_PREFIX!r})")
        self.optimizer = torch.optim.Adam(self.alphas, lr=lr, betas=betas, weight_decay=weight_decay)
        self._stacked = StackedPasses(model, self.weight_names, self.alpha_names)

    # ---- functional passes ------------------------------------------------------------
    def _loss(self, weights: Sequence[Tensor], alphas: Sequence[Tensor], x: Tensor, y: Tensor,
              buffers: dict[str, Tensor], *, amp: bool = True) -> Tensor:
        """Mean CE of the model with the given weights, alphas and (copied) buffers.

        ``amp=False`` forces full precision even when mixed precision is on (the
        finite-difference Hessian passes need it, see :meth:`_hessian_vector`)."""
        params = dict(zip(self.weight_names, weights))
        params.update(zip(self.alpha_names, alphas))
        params.update(buffers)
        ctx = self._autocast() if amp and self._autocast is not None else contextlib.nullcontext()
        with ctx, frozen_running_stats():  # these passes never move the model's running statistics
            logits = functional_call(self.model, params, (x,))
        return F.cross_entropy(_upcast(logits), y)

    def _buffers(self) -> dict[str, Tensor]:
        """Buffers substituted in the functional passes: none (the model's own, left unchanged)
        when the model runs them without touching its running statistics
        (``running_stats_freezable``: a fused supernet under ``frozen_running_stats``), copies
        otherwise (plain batch-norm modules update theirs in training mode)."""
        if getattr(self.model, "running_stats_freezable", False):
            return {}
        return {n: b.clone() for n, b in self.model.named_buffers()}

    def objectives(self, strategy: str | None = None) -> tuple[bool, bool]:
        """Which of (natural, adversarial) the strategy needs."""
        strategy = strategy or self.strategy
        if strategy == "natural":
            return True, False
        if strategy == "adversarial":
            return False, True
        if strategy == "fixed":
            return self.fixed_weights[0] > 0, self.fixed_weights[1] > 0
        return True, True

    def _momentum(self, w_optimizer: torch.optim.Optimizer | None) -> Grads:
        """``mu * buf`` of the weight optimiser (zeros before its first step)."""
        out = []
        for p in self.weights:
            buf = None
            if w_optimizer is not None:
                buf = w_optimizer.state.get(p, {}).get("momentum_buffer")
            out.append(torch.zeros_like(p) if buf is None else buf * self.w_momentum)  # buffers need no grad
        return out

    def unrolled_weights(self, batch: ArchBatch, *, eta: float,
                         w_optimizer: torch.optim.Optimizer | None = None,
                         buffers: dict[str, Tensor] | None = None) -> Grads:
        """``w' = w - eta * (mu * buf + dL_train/dw + wd * w)`` (detached), one weight-gradient
        pass on the training batch with the alphas held constant."""
        buffers = self._buffers() if buffers is None else buffers
        w_leaf = [p.detach().requires_grad_(True) for p in self.weights]
        loss_tr = self._loss(w_leaf, [a.detach() for a in self.alphas], batch.x_train, batch.y_train,
                             buffers)
        g_w = _grad(loss_tr, w_leaf)
        with torch.no_grad():  # (the leaves hold the weights' values; nothing here is recorded)
            # the reference's order: theta - eta * (moment + (grad + wd * theta))
            d = torch._foreach_add(g_w, w_leaf, alpha=self.w_weight_decay)
            d = torch._foreach_add(self._momentum(w_optimizer), d)
            return list(torch._foreach_add(w_leaf, d, alpha=-eta))

    def hypergradients(self, batch: ArchBatch, *, eta: float,
                       w_optimizer: torch.optim.Optimizer | None = None,
                       strategy: str | None = None) -> tuple[list[Grads | None], list[Tensor | None]]:
        """Per-objective hypergradients and validation losses.

        Args:
            batch: training, validation and adversarial validation inputs.
            eta: the weight learning rate of the unrolled step (second / exact order).
            w_optimizer: the weight SGD optimiser, whose momentum buffers enter the unrolled
                step (None: no momentum yet).
            strategy: overrides the architect's strategy (e.g. adversarial warm-up).

        Returns:
            ``([u_nat, u_adv], [f1, f2])``: each ``u`` a list shaped like the alphas, and the
            detached objective values; ``None`` where the strategy does not need an objective.

        Raises:
            ValueError: the adversarial objective is needed but ``batch.x_val_adv`` is None.
        """
        want_nat, want_adv = self.objectives(strategy)
        if want_adv and batch.x_val_adv is None:
            raise ValueError("the adversarial objective needs ArchBatch.x_val_adv")
        objectives: list[tuple[Tensor, float] | None] = [
            (batch.x_val, 1.0) if want_nat else None,
            (batch.x_val_adv, self.adv_coef) if want_adv else None,  # type: ignore[list-item]
        ]
        per_order = {"first": self._first_order, "exact": self._exact_order, "second": self._second_order}
        return per_order[self.order](objectives, batch, eta, w_optimizer)

    def _first_order(self, objectives: Sequence[tuple[Tensor, float] | None], batch: ArchBatch, eta: float,
                     w_optimizer: torch.optim.Optimizer | None) -> tuple[list[Grads | None], list[Tensor | None]]:
        """``d_a L_val(w, a)`` at the current weights, one pass per objective: stacking them gained
        only 2% here (within noise; ``benchmarks/RESULTS.md``), and separate passes keep the
        first-order search (the quickstart's) to its sums of before, whose supernets sit close
        to the 0.5 accuracy bar (stacked, the fixed one ended at 0.490)."""
        return self._objective_grads(objectives, batch.y_val, [p.detach() for p in self.weights], self._buffers(),
                                     stack=False)

    def _objective_grads(self, objectives: Sequence[tuple[Tensor, float] | None], y: Tensor,
                         weights: Sequence[Tensor], buffers: dict[str, Tensor], *, stack: bool,
                         wrt_weights: bool = False) -> tuple[list[Grads | None], list[Tensor | None]]:
        """Per objective ``(x, coef)``: the gradient of ``coef * CE(model(x), y)`` with respect to
        the alphas (then the ``weights``, with ``wrt_weights``), and the detached objective;
        with ``stack``, both objectives in one stacked pass where the model can stack them."""
        us: list[Grads | None] = [None, None]
        losses: list[Tensor | None] = [None, None]
        present = [obj for obj in objectives if obj is not None]
        if stack and len(present) == 2 and self._stackable() and present[0][0].shape == present[1][0].shape:
            return self._stacked.objectives(present, y, weights, self.alphas, wrt_weights=wrt_weights,
                                            autocast=self._autocast)
        for i, obj in enumerate(objectives):
            if obj is not None:
                loss = self._loss(weights, self.alphas, obj[0], y, buffers) * obj[1]
                us[i] = _grad(loss, list(self.alphas) + (list(weights) if wrt_weights else []))
                losses[i] = loss.detach()
        return us, losses

    def _exact_order(self, objectives: Sequence[tuple[Tensor, float] | None], batch: ArchBatch, eta: float,
                     w_optimizer: torch.optim.Optimizer | None) -> tuple[list[Grads | None], list[Tensor | None]]:
        """``d_a L_val(w'(a), a)`` by double backward through the unrolled step."""
        alphas, buffers = self.alphas, self._buffers()
        w_leaf = [p.detach().requires_grad_(True) for p in self.weights]
        loss_tr = self._loss(w_leaf, alphas, batch.x_train, batch.y_train, buffers)
        g_w = _grad(loss_tr, w_leaf, create_graph=True)  # depends on the alphas
        moment = self._momentum(w_optimizer)
        unrolled = [p.detach() - eta * (m + (g + self.w_weight_decay * p.detach()))
                    for p, m, g in zip(w_leaf, moment, g_w)]
        us: list[Grads | None] = [None, None]
        losses: list[Tensor | None] = [None, None]
        for i, obj in enumerate(objectives):
            if obj is not None:
                loss = self._loss(unrolled, alphas, obj[0], batch.y_val, buffers) * obj[1]
                us[i], losses[i] = _grad(loss, alphas, retain_graph=True), loss.detach()
        return us, losses

    def _second_order(self, objectives: Sequence[tuple[Tensor, float] | None], batch: ArchBatch, eta: float,
                      w_optimizer: torch.optim.Optimizer | None) -> tuple[list[Grads | None], list[Tensor | None]]:
        """DARTS: ``d_a L_val(w') - eta * (finite-difference Hessian-vector product)``; the
        unrolled weights once for both objectives."""
        alphas, buffers = self.alphas, self._buffers()
        unrolled = [p.requires_grad_(True) for p in self.unrolled_weights(
            batch, eta=eta, w_optimizer=w_optimizer, buffers=buffers)]
        n_a = len(alphas)
        w = self.weights  # only read under no_grad (the shifted weights of the Hessian-vector passes)
        us, losses = self._objective_grads(objectives, batch.y_val, unrolled, buffers, stack=self.stack_passes,
                                           wrt_weights=True)
        for i, grads in enumerate(us):
            if grads is not None:
                d_alpha, v = grads[:n_a], grads[n_a:]
                implicit = self._hessian_vector(w, v, batch, buffers)
                us[i] = list(torch._foreach_add(d_alpha, implicit, alpha=-eta))
        return us, losses

    def _hessian_vector(self, w: Sequence[Tensor], v: Sequence[Tensor], batch: ArchBatch,
                        buffers: dict[str, Tensor]) -> Grads:
        """``(d_a L_train(w + r v) - d_a L_train(w - r v)) / (2 r)``, ``r = fd_radius / ||v||``.

        Two passes that ask only for the alpha gradients (the shifted weights are constants,
        so no weight gradient is computed). A zero ``v`` gives a zero product. They always run
        in full precision: the product is a difference of two nearly equal gradients divided
        by a small ``2 r``, and under bf16 autocast its direction was measured to be lost
        (cosine 0.42 to the fp32 hypergradient on an H100), so mixed precision stops here.
        """
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(v))))
        r = self.fd_radius / norm.clamp_min(1e-30)  # 0-d tensor, no host sync
        with torch.no_grad():
            rv = torch._foreach_mul(list(v), r)
            plus, minus = torch._foreach_add(list(w), rv), torch._foreach_sub(list(w), rv)
        diff: Sequence[Tensor]
        if self.stack_passes and self._stackable():
            diff = self._stacked.difference(plus, minus, self.alphas, batch.x_train, batch.y_train)
        else:
            grads = [_grad(self._loss(ws, self.alphas, batch.x_train, batch.y_train, buffers, amp=False), self.alphas)
                     for ws in (plus, minus)]
            diff = torch._foreach_sub(grads[0], grads[1])
        return list(torch._foreach_div(diff, 2 * r))

    def _stackable(self) -> bool:
        """Whether the model can stack batches with per-block weights (fused, training mode)."""
        return self._stacked.usable()

    # ---- combination and update -------------------------------------------------------
    def combine(self, us: list[Grads | None], losses: list[Tensor | None],
                strategy: str | None = None) -> tuple[Grads, Tensor]:
        """The update direction (shaped like the alphas) and gamma (weight of ``u_nat``)."""
        strategy = strategy or self.strategy
        u_nat, u_adv = us
        ref = self.alphas[0]
        if strategy == "fixed":
            a, b = self.fixed_weights
            gamma = torch.full((), a / (a + b), dtype=ref.dtype, device=ref.device)  # no host copy
            if u_adv is None:
                return [a * g for g in u_nat], gamma  # type: ignore[union-attr]
            if u_nat is None:
                return [b * g for g in u_adv], gamma
            return [a * g1 + b * g2 for g1, g2 in zip(u_nat, u_adv)], gamma
        if strategy == "natural":
            return list(u_nat), ref.new_ones(())  # type: ignore[arg-type]
        if strategy == "adversarial":
            return list(u_adv), ref.new_zeros(())  # type: ignore[arg-type]
        if u_nat is None or u_adv is None:
            raise ValueError("strategy 'mgda' needs both hypergradients")
        flat = [torch.cat([g.reshape(-1) for g in u]) for u in (u_nat, u_adv)]  # [n_alpha] each
        wts = mgda_weights(flat, losses=[lo for lo in losses if lo is not None],
                           normalization=self.normalization)
        gamma = wts[0]
        return [gamma * g1 + (1 - gamma) * g2 for g1, g2 in zip(u_nat, u_adv)], gamma

    def step(self, batch: ArchBatch, *, eta: float, w_optimizer: torch.optim.Optimizer | None = None,
             strategy: str | None = None) -> ArchStats:
        """One architecture update: hypergradients, combination, Adam step.

        Args:
            batch: the step's inputs (see :class:`ArchBatch`).
            eta: the current weight learning rate (unrolled step).
            w_optimizer: the weight optimiser (its momentum enters the unrolled step).
            strategy: overrides the architect's strategy for this step.

        Returns:
            gamma, the objective values and the update's norm, as 0-d tensors, and (with
            ``diagnostics``) the step's diagnostics vector; also kept as :attr:`last_stats`.
        """
        strategy = strategy or self.strategy
        us, losses = self.hypergradients(batch, eta=eta, w_optimizer=w_optimizer, strategy=strategy)
        direction, gamma = self.combine(us, losses, strategy)
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.alphas, direction):
            p.grad = g.detach().to(p.dtype)
        self.optimizer.step()
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([g.detach() for g in direction])))
        diag = step_vector(us[0], us[1], direction, gamma, losses, self.alphas) if self.diagnostics else None
        self.last_stats = ArchStats(gamma=gamma.detach(), loss_nat=losses[0], loss_adv=losses[1], grad_norm=norm,
                                    diagnostics=diag)
        return self.last_stats
