"""Min-norm solvers of the multiple-gradient descent algorithm (MGDA), as pure tensor math.

Given objective gradients g_1..g_k, MGDA finds the point of their convex hull closest to the
origin, ``d = sum_i w_i g_i`` with ``w`` on the simplex minimising ``||d||^2``. ``-d`` is a
descent direction for every objective (or ``d = 0`` at a Pareto-stationary point).

Two objectives have the closed form (Sener & Koltun 2018, ARNAS eq. for gamma*)::

    gamma* = clamp( ((g2 - g1) . g2) / ||g2 - g1||^2, 0, 1 ),   d = gamma* g1 + (1 - gamma*) g2

When ``g1 == g2`` (numerically: ``||g1 - g2||^2 <= tol * max(||g1||^2, ||g2||^2)``) every
gamma gives the same point and the formula divides by zero; this module returns ``0.5``.
Nothing here calls ``.item()``: the branch is a ``torch.where``, so no host sync on GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from arnas_ray._config import check_choice

__all__ = ["NORMALIZATIONS", "gradient_scales", "min_norm_2", "min_norm_simplex", "mgda_weights"]

NORMALIZATIONS: tuple[str, ...] = ("none", "l2", "loss", "loss+")
_TINY = 1e-30


def min_norm_2(g1: Tensor, g2: Tensor, *, tol: float = 1e-12) -> Tensor:
    """gamma in [0, 1] minimising ``||gamma g1 + (1 - gamma) g2||``; a 0-d tensor.

    Args:
        g1, g2: flat gradients of equal shape ``[d]`` (any shape is flattened).
        tol: relative threshold below which the two gradients count as identical.
    """
    g1, g2 = g1.reshape(-1), g2.reshape(-1)
    diff = g2 - g1
    denom = torch.dot(diff, diff)
    num = torch.dot(diff, g2)
    scale = torch.maximum(torch.dot(g1, g1), torch.dot(g2, g2))
    degenerate = denom <= tol * scale + _TINY
    gamma = (num / torch.where(degenerate, torch.ones_like(denom), denom)).clamp(0.0, 1.0)
    return torch.where(degenerate, torch.full_like(gamma, 0.5), gamma)


def min_norm_simplex(G: Tensor, *, max_iter: int = 500, tol: float = 1e-10) -> Tensor:
    """Weights ``w[k]`` on the simplex minimising ``||w @ G||`` for ``G[k, d]`` (Frank-Wolfe).

    Starts from the best pairwise solution and, at each iteration, moves towards the vertex
    ``t = argmin_i (M w)_i`` (``M = G G^T``) with the exact two-point line search of
    :func:`min_norm_2`. Stops when the weights move less than ``tol``. For k = 2 this is the
    closed form.
    """
    k = G.shape[0]
    G = G.reshape(k, -1)
    if k == 1:
        return G.new_ones(1)
    if k == 2:
        g = min_norm_2(G[0], G[1])
        return torch.stack([g, 1 - g])
    M = G @ G.T  # [k, k]
    # best pair as the starting point
    best, w = None, None
    for i in range(k):
        for j in range(i + 1, k):
            gam = _gamma_from_gram(M[i, i], M[i, j], M[j, j])
            val = gam * gam * M[i, i] + 2 * gam * (1 - gam) * M[i, j] + (1 - gam) ** 2 * M[j, j]
            if best is None or val < best:
                best = val
                w = G.new_zeros(k)
                w[i], w[j] = gam, 1 - gam
    assert w is not None
    for _ in range(max_iter):
        Mw = M @ w
        t = int(torch.argmin(Mw))
        v1v1 = w @ Mw
        v1v2 = Mw[t]
        v2v2 = M[t, t]
        gam = _gamma_from_gram(v1v1, v1v2, v2v2)
        new_w = gam * w
        new_w[t] += 1 - gam
        if float((new_w - w).abs().sum()) < tol:
            w = new_w
            break
        w = new_w
    return w


def _gamma_from_gram(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """gamma minimising ||gamma v1 + (1-gamma) v2||^2 with a=v1.v1, b=v1.v2, c=v2.v2."""
    denom = a - 2 * b + c
    if float(denom) <= 1e-12 * float(torch.maximum(a, c)) + _TINY:
        return a.new_tensor(0.5)
    return ((c - b) / denom).clamp(0.0, 1.0)


def gradient_scales(grads: Sequence[Tensor], losses: Sequence[Tensor] | None, normalization: str) -> list[Tensor]:
    """Per-objective divisors applied before the min-norm solve (MGDA-UB's normalisers).

    ``none``: 1; ``l2``: ``||g_i||``; ``loss``: ``L_i``; ``loss+``: ``L_i * ||g_i||``.
    The normalised gradients only choose the weights; the update direction combines the raw
    gradients with those weights (as Sener & Koltun do).
    """
    check_choice(normalization, NORMALIZATIONS, "normalization")
    out = []
    for i, g in enumerate(grads):
        if normalization == "none":
            s = g.new_ones(())
        elif normalization == "l2":
            s = g.norm()
        else:
            if losses is None:
                raise ValueError(f"normalization={normalization!r} needs the objective losses")
            s = losses[i].detach().abs()
            if normalization == "loss+":
                s = s * g.norm()
        out.append(s.clamp_min(_TINY))
    return out


def mgda_weights(grads: Sequence[Tensor], *, losses: Sequence[Tensor] | None = None,
                 normalization: str = "none") -> Tensor:
    """Simplex weights of the MGDA common descent direction for flat gradients ``grads``."""
    scales = gradient_scales(grads, losses, normalization)
    normed = [g.reshape(-1) / s for g, s in zip(grads, scales)]
    if len(normed) == 2:
        gamma = min_norm_2(normed[0], normed[1])
        return torch.stack([gamma, 1 - gamma])
    return min_norm_simplex(torch.stack(normed))
