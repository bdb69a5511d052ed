"""Architecture gradients of the ARNAS search: per-objective hypergradients and their combination.

Two objectives on a validation batch: ``f1 = CE(model(x_val), y_val)`` (natural) and
``f2 = adv_coef * CE(model(x_val_adv), y_val)`` (adversarial, ARNAS: ``adv_coef = 0.1``).

Orders (DARTS):

* ``first``: ``u_i = d f_i(w, a) / d a`` at the current weights.
* ``second``: one unrolled weight step on the (adversarial) training batch,
  ``w' = w - eta * (mu * buf + dL_train/dw + wd * w)``, computed ONCE and shared by both
  objectives, then ``u_i = d_a f_i(w', a) - eta * H v_i`` with ``v_i = d f_i(w', a) / d w'`` and
  the Hessian-vector product by central finite differences::

      H v ~= ( d_a L_train(w + r v, a) - d_a L_train(w - r v, a) ) / (2 r),  r = 0.01 / ||v||

* ``exact``: the same unrolled hypergradient by double backward (slow; used by tests).

Strategies combine ``u_nat`` and ``u_adv`` into the update ``d``: ``mgda`` takes the min-norm
point of their convex hull (:mod:`arnas_ray.search.mgda`), ``fixed`` a given weighting,
``natural``/``adversarial`` one objective only (the other is not computed).

All passes go through ``torch.func.functional_call`` with substituted parameters; nothing
mutates ``p.data`` and the model's BN running statistics are not touched by these passes
(they run on copies of the buffers). Only the gradients that are needed are requested, so e.g.
the Hessian-vector passes compute no weight gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from arnas_ray._config import check_choice
from arnas_ray.search.config import ORDERS, STRATEGIES
from arnas_ray.search.mgda import mgda_weights
from arnas_ray.space.supernet import ALPHA_PREFIX

__all__ = ["ArchBatch", "ArchStats", "Architect"]

_R = 0.01  # finite-difference radius numerator (DARTS, ARNAS)


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
    gamma: Tensor  # weight of the natural objective in the combined update (0-d tensor)
    loss_nat: Tensor | None
    loss_adv: Tensor | None


class Architect:
    """Computes and applies architecture updates for a :class:`~arnas_ray.space.Supernet`.

    Args:
        model: the supernet (alphas are its ``alphas.*`` parameters).
        order, strategy: see the module docstring.
        adv_coef: scale of the adversarial objective.
        fixed_weights: ``(w_nat, w_adv)`` for ``strategy="fixed"``.
        normalization: MGDA gradient normalisation (``none``, ``l2``, ``loss``, ``loss+``).
        lr, betas, weight_decay: Adam on the alphas (ARNAS: 3e-4, (0.5, 0.999), 1e-3).
        w_momentum, w_weight_decay: the weight optimiser's momentum and decay (unrolled step).
        autocast: a context-manager factory wrapping forward passes (mixed precision) or None.
    """

    def __init__(self, model: nn.Module, *, order: str = "second", strategy: str = "mgda",
                 adv_coef: float = 0.1, fixed_weights: tuple[float, float] = (1.0, 1.0),
                 normalization: str = "none", lr: float = 3e-4, betas: tuple[float, float] = (0.5, 0.999),
                 weight_decay: float = 1e-3, w_momentum: float = 0.9, w_weight_decay: float = 3e-4,
                 autocast=None):
        check_choice(order, ORDERS, "order")
        check_choice(strategy, STRATEGIES, "strategy")
        self.model = model
        self.order, self.strategy = order, strategy
        self.adv_coef, self.fixed_weights, self.normalization = adv_coef, fixed_weights, normalization
        self.w_momentum, self.w_weight_decay = w_momentum, w_weight_decay
        self._autocast = autocast
        named = list(model.named_parameters())
        self.alpha_names = [n for n, _ in named if n.startswith(ALPHA_PREFIX)]
        self.alphas = [p for n, p in named if n.startswith(ALPHA_PREFIX)]
        self.weight_names = [n for n, _ in named if not n.startswith(ALPHA_PREFIX)]
        self.weights = [p for n, p in named if not n.startswith(ALPHA_PREFIX)]
        self.optimizer = torch.optim.Adam(self.alphas, lr=lr, betas=betas, weight_decay=weight_decay)

    # ---- functional passes ------------------------------------------------------------
    def _loss(self, weights: Sequence[Tensor], alphas: Sequence[Tensor], x: Tensor, y: Tensor,
              buffers: dict[str, Tensor]) -> Tensor:
        params = dict(zip(self.weight_names, weights))
        params.update(zip(self.alpha_names, alphas))
        params.update(buffers)
        if self._autocast is None:
            logits = functional_call(self.model, params, (x,))
        else:
            with self._autocast():
                logits = functional_call(self.model, params, (x,))
        return F.cross_entropy(logits.float(), y)

    def _buffers(self) -> dict[str, Tensor]:
        return {n: b.clone() for n, b in self.model.named_buffers()}

    def _objectives(self, strategy: str) -> tuple[bool, bool]:
        if strategy == "natural":
            return True, False
        if strategy == "adversarial":
            return False, True
        if strategy == "fixed":
            return self.fixed_weights[0] > 0, self.fixed_weights[1] > 0
        return True, True

    def hypergradients(self, batch: ArchBatch, *, eta: float, w_optimizer: torch.optim.Optimizer | None = None,
                       strategy: str | None = None) -> tuple[list[list[Tensor] | None], list[Tensor | None]]:
        """Per-objective hypergradients ``[u_nat, u_adv]`` (each a list shaped like the alphas,
        or ``None`` when that objective is not needed) and the validation losses."""
        strategy = strategy or self.strategy
        want_nat, want_adv = self._objectives(strategy)
        if want_adv and batch.x_val_adv is None:
            raise ValueError("the adversarial objective needs ArchBatch.x_val_adv")
        objectives: list[tuple[Tensor, float] | None] = [
            (batch.x_val, 1.0) if want_nat else None,
            (batch.x_val_adv, self.adv_coef) if want_adv else None,  # type: ignore[list-item]
        ]
        alphas = self.alphas
        w = [p.detach() for p in self.weights]
        buffers = self._buffers()
        us: list[list[Tensor] | None] = [None, None]
        losses: list[Tensor | None] = [None, None]

        if self.order == "first":
            for i, obj in enumerate(objectives):
                if obj is None:
                    continue
                x, coef = obj
                loss = self._loss(w, alphas, x, batch.y_val, buffers) * coef
                us[i] = list(torch.autograd.grad(loss, alphas))
                losses[i] = loss.detach()
            return us, losses

        moment = self._momentum(w_optimizer)
        if self.order == "exact":
            w_req = w  # weights are constants; alphas carry the graph
            loss_tr = self._loss(w_req, alphas, batch.x_train, batch.y_train, buffers)
            g_w = torch.autograd.grad(loss_tr, self.weights_for_grad(w_req), create_graph=True)
            unrolled = [p - eta * (m + g + self.w_weight_decay * p) for p, m, g in zip(w, moment, g_w)]
            for i, obj in enumerate(objectives):
                if obj is None:
                    continue
                x, coef = obj
                loss = self._loss(unrolled, alphas, x, batch.y_val, buffers) * coef
                us[i] = list(torch.autograd.grad(loss, alphas, retain_graph=True))
                losses[i] = loss.detach()
            return us, losses

        # second order: shared unrolled weights (one pass, weight gradients only)
        w_leaf = [p.requires_grad_(True) for p in (t.detach() for t in w)]
        loss_tr = self._loss(w_leaf, [a.detach() for a in alphas], batch.x_train, batch.y_train, buffers)
        g_w = torch.autograd.grad(loss_tr, w_leaf)
        with torch.no_grad():
            unrolled = [p - eta * (m + g + self.w_weight_decay * p) for p, m, g in zip(w, moment, g_w)]
        unrolled = [p.requires_grad_(True) for p in unrolled]
        n_a = len(alphas)
        for i, obj in enumerate(objectives):
            if obj is None:
                continue
            x, coef = obj
            loss = self._loss(unrolled, alphas, x, batch.y_val, buffers) * coef
            grads = torch.autograd.grad(loss, list(alphas) + unrolled)
            d_alpha, v = grads[:n_a], grads[n_a:]
            implicit = self._hessian_vector(w, v, batch, buffers)
            us[i] = [da - eta * h for da, h in zip(d_alpha, implicit)]
            losses[i] = loss.detach()
        return us, losses

    @staticmethod
    def weights_for_grad(w: list[Tensor]) -> list[Tensor]:
        for p in w:
            p.requires_grad_(True)
        return w

    def _momentum(self, w_optimizer: torch.optim.Optimizer | None) -> list[Tensor]:
        out = []
        for p in self.weights:
            buf = None
            if w_optimizer is not None:
                buf = w_optimizer.state.get(p, {}).get("momentum_buffer")
            out.append(torch.zeros_like(p) if buf is None else buf.detach() * self.w_momentum)
        return out

    def _hessian_vector(self, w: list[Tensor], v: Sequence[Tensor], batch: ArchBatch,
                        buffers: dict[str, Tensor]) -> list[Tensor]:
        """(d_a L_train(w + r v) - d_a L_train(w - r v)) / (2 r), r = 0.01 / ||v||."""
        norm = torch.sqrt(sum((t.float() ** 2).sum() for t in v))
        r = _R / norm.clamp_min(1e-30)
        grads = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                shifted = [p + (sign * r).to(p.dtype) * vi for p, vi in zip(w, v)]
            loss = self._loss(shifted, self.alphas, batch.x_train, batch.y_train, buffers)
            grads.append(torch.autograd.grad(loss, self.alphas))
        return [(gp - gm) / (2 * r).to(gp.dtype) for gp, gm in zip(*grads)]

    # ---- combination and update -------------------------------------------------------
    def combine(self, us: list[list[Tensor] | None], losses: list[Tensor | None],
                strategy: str | None = None) -> tuple[list[Tensor], Tensor]:
        """The update direction (shaped like the alphas) and gamma (weight of u_nat)."""
        strategy = strategy or self.strategy
        u_nat, u_adv = us
        ref = self.alphas[0]
        if strategy == "natural" or (strategy == "fixed" and u_adv is None):
            scale = 1.0 if strategy == "natural" else self.fixed_weights[0]
            return [scale * g for g in u_nat], ref.new_ones(())  # type: ignore[union-attr]
        if strategy == "adversarial" or (strategy == "fixed" and u_nat is None):
            scale = 1.0 if strategy == "adversarial" else self.fixed_weights[1]
            return [scale * g for g in u_adv], ref.new_zeros(())  # type: ignore[union-attr]
        assert u_nat is not None and u_adv is not None
        if strategy == "fixed":
            a, b = self.fixed_weights
            gamma = ref.new_tensor(a / (a + b))
            return [a * g1 + b * g2 for g1, g2 in zip(u_nat, u_adv)], gamma
        flat = [torch.cat([g.reshape(-1) for g in u]) for u in (u_nat, u_adv)]
        wts = mgda_weights(flat, losses=[lo for lo in losses if lo is not None], normalization=self.normalization)
        gamma = wts[0]
        return [gamma * g1 + (1 - gamma) * g2 for g1, g2 in zip(u_nat, u_adv)], gamma

    def step(self, batch: ArchBatch, *, eta: float, w_optimizer: torch.optim.Optimizer | None = None,
             strategy: str | None = None) -> ArchStats:
        """One architecture update: hypergradients, combination, Adam step."""
        strategy = strategy or self.strategy
        us, losses = self.hypergradients(batch, eta=eta, w_optimizer=w_optimizer, strategy=strategy)
        direction, gamma = self.combine(us, losses, strategy)
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.alphas, direction):
            p.grad = g.detach().to(p.dtype)
        self.optimizer.step()
        return ArchStats(gamma=gamma.detach(), loss_nat=losses[0], loss_adv=losses[1])
