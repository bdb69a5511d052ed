"""Pairs of the architecture step's passes as one pass of two batches stacked along the
channels, each block with its own weights (:func:`arnas_ray.space.block_params`); same
mathematics as the two passes (``Architect(stack_passes=True)``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from arnas_ray.search._amp import upcast
from arnas_ray.space import block_params
from arnas_ray.space.supernet import frozen_running_stats

__all__ = ["StackedPasses", "grad"]

Grads = list[Tensor]


def grad(loss: Tensor, inputs: Sequence[Tensor], *, create_graph: bool = False,
         retain_graph: bool | None = None) -> Grads:
    """``torch.autograd.grad`` with zeros for inputs the loss does not use (e.g. the alphas of
    a cell type absent from a tiny layout)."""
    return list(torch.autograd.grad(loss, list(inputs), create_graph=create_graph,
                                    retain_graph=retain_graph, allow_unused=True,
                                    materialize_grads=True))


class StackedPasses(nn.Module):
    """The supernet's stacked pass (``forward_groups``) as a module forward, for
    ``functional_call`` with substituted weights and alphas (given by their names)."""

    def __init__(self, net: nn.Module, weight_names: Sequence[str], alpha_names: Sequence[str]):
        super().__init__()
        self.net = net
        self.weight_names, self.alpha_names = list(weight_names), list(alpha_names)

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        out: list[Tensor] = cast(Any, self.net).forward_groups(xs)
        return out

    def usable(self) -> bool:
        """Whether the model runs stacked batches with per-block weights: a fused supernet
        (its running statistics freezable) in training mode."""
        return bool(getattr(self.net, "running_stats_freezable", False)) and self.net.training

    def _run(self, weights: Sequence[Tensor], alphas: Sequence[Tensor], xs: Sequence[Tensor]) -> list[Tensor]:
        params = {f"net.{n}": t for n, t in zip(self.weight_names, weights)}
        params.update({f"net.{n}": a for n, a in zip(self.alpha_names, alphas)})
        out: list[Tensor] = functional_call(self, params, (list(xs),))
        return out

    def difference(self, plus: Sequence[Tensor], minus: Sequence[Tensor], alphas: Sequence[Tensor], x: Tensor,
                   y: Tensor) -> Grads:
        """``d_a L(plus) - d_a L(minus)`` on the batch ``(x, y)`` from one pass of ``x`` stacked
        twice, block 0 with the weights ``plus`` and block 1 with ``minus``: the loss
        ``L(plus) - L(minus)`` gives the difference in one backward (the alphas are shared)."""
        with frozen_running_stats(), block_params([(p, (p, m)) for p, m in zip(plus, minus)]):
            logits = self._run(plus, alphas, [x, x])
        return grad(F.cross_entropy(logits[0], y) - F.cross_entropy(logits[1], y), alphas)

    def objectives(self, objectives: Sequence[tuple[Tensor, float]], y: Tensor, weights: Sequence[Tensor],
                   alphas: Sequence[Tensor], *, wrt_weights: bool,
                   autocast: Callable[[], contextlib.AbstractContextManager[None]] | None
                   ) -> tuple[list[Grads | None], list[Tensor | None]]:
        """Per objective ``(x, coef)``: the gradient of ``coef * CE(model(x), y)`` with respect to
        the alphas (then the weights, with ``wrt_weights``) and the detached objective, from one
        pass of both batches stacked. Block 1 runs leaf copies of the alphas (and weights), so
        the gradients of ``f_1 + f_2`` with respect to each block's leaves are each objective's."""
        own = [[*alphas, *(weights if wrt_weights else [])]]
        own.append([t.detach().clone().requires_grad_(True) for t in own[0]])
        ctx = autocast() if autocast is not None else contextlib.nullcontext()
        with ctx, frozen_running_stats(), block_params([(t, (t, c)) for t, c in zip(own[0], own[1])]):
            logits = self._run(weights, alphas, [objectives[0][0], objectives[1][0]])
        losses = [F.cross_entropy(upcast(lo), y) * coef for lo, (_, coef) in zip(logits, objectives)]
        grads = grad(losses[0] + losses[1], own[0] + own[1])
        n = len(own[0])
        return [grads[:n], grads[n:]], [lo.detach() for lo in losses]
