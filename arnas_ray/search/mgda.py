"""Min-norm solvers of the multiple-gradient descent algorithm (MGDA), as pure tensor math.

Given objective gradients g_1..g_k, MGDA finds the point of their convex hull closest to the
origin, ``d = sum_i w_i g_i`` with ``w`` on the simplex minimising ``||d||^2``. ``-d`` is a
descent direction for every objective (or ``d = 0`` at a Pareto-stationary point).

Two objectives have the closed form (Sener & Koltun 2018; ARNAS's gamma*)::

    gamma* = clamp( ((g2 - g1) . g2) / ||g2 - g1||^2, 0, 1 ),   d = gamma* g1 + (1 - gamma*) g2

with the two boundary cases made exact: ``g1 . g2 >= g2 . g2`` (``g2`` is the min-norm point:
moving towards ``g1`` only lengthens it) gives ``gamma* = 0`` and ``g1 . g2 >= g1 . g1`` gives
``gamma* = 1``. When ``g1 == g2`` (numerically: ``||g1 - g2||^2 <= tol * max(||g1||^2,
||g2||^2)``) every gamma gives the same point and the formula divides by zero (the reference
code returns NaN); this module returns ``0.5``. :func:`min_norm_2` never calls ``.item()``:
its branches are ``torch.where``, so it causes no host sync on a GPU.

Normalisation (:func:`gradient_scales`, Sener & Koltun's MGDA-UB variants) divides each
gradient by a scale before the solve; the weights found are then applied to the *raw*
gradients:

* ``none``: scale 1 (ARNAS).
* ``l2``: ``||g_i||``; the weights become invariant to rescaling any one gradient.
* ``loss``: the objective's loss ``L_i``; invariant to rescaling one objective, since that
  rescales its gradient and its loss alike.
* ``loss+``: ``L_i * ||g_i||`` (MGDA-UB's ``loss+``; scale invariant in neither sense).

Example:
    >>> import torch
    >>> g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    >>> float(min_norm_2(g1, g2))
    0.5
    >>> mgda_weights([g1, 3 * g2], normalization="l2").tolist()
    [0.5, 0.5]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from arnas_ray._config import check_choice

__all__ = ["NORMALIZATIONS", "gradient_scales", "mgda_weights", "min_norm_2", "min_norm_simplex"]

NORMALIZATIONS: tuple[str, ...] = ("none", "l2", "loss", "loss+")
_TINY = 1e-30


def min_norm_2(g1: Tensor, g2: Tensor, *, tol: float = 1e-12) -> Tensor:
    """gamma in [0, 1] minimising ``||gamma g1 + (1 - gamma) g2||``, as a 0-d tensor.

    Args:
        g1: first gradient (any shape; flattened).
        g2: second gradient, with as many elements as ``g1``.
        tol: relative threshold on ``||g1 - g2||^2`` below which the two gradients count as
            identical (then gamma = 0.5).

    Returns:
        gamma, exactly 0 when ``g1 . g2 >= g2 . g2`` and exactly 1 when ``g1 . g2 >= g1 . g1``
        (unless the gradients are identical).
    """
    g1, g2 = g1.reshape(-1), g2.reshape(-1)
    if g1.shape != g2.shape:
        raise ValueError(f"g1 and g2 must have as many elements, got {g1.numel()} and {g2.numel()}")
    diff = g2 - g1  # [d]
    a, b, c = torch.dot(g1, g1), torch.dot(g1, g2), torch.dot(g2, g2)
    denom = torch.dot(diff, diff)  # ||g2 - g1||^2, without the cancellation of a - 2b + c
    num = torch.dot(diff, g2)  # (g2 - g1) . g2
    degenerate = denom <= tol * torch.maximum(a, c) + _TINY
    gamma = (num / torch.where(degenerate, torch.ones_like(denom), denom)).clamp(0.0, 1.0)
    gamma = torch.where(b >= a, torch.ones_like(gamma), gamma)
    gamma = torch.where(b >= c, torch.zeros_like(gamma), gamma)
    return torch.where(degenerate, torch.full_like(gamma, 0.5), gamma)


def _gamma_from_gram(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """gamma minimising ``||gamma v1 + (1 - gamma) v2||^2`` with a=v1.v1, b=v1.v2, c=v2.v2."""
    if b >= c:
        return torch.zeros_like(a)
    if b >= a:
        return torch.ones_like(a)
    denom = a - 2 * b + c
    if float(denom) <= 1e-12 * float(torch.maximum(a, c)) + _TINY:
        return torch.full_like(a, 0.5)
    return ((c - b) / denom).clamp(0.0, 1.0)


def min_norm_simplex(G: Tensor, *, max_iter: int = 1000, tol: float = 1e-12) -> Tensor:
    """Weights ``w[k]`` on the simplex minimising ``||w @ G||`` for ``G[k, d]`` (Frank-Wolfe).

    Starts from the best pair (closed form) and, at each iteration, moves towards the vertex
    ``t = argmin_i (M w)_i`` (``M = G G^T``, the Frank-Wolfe vertex) with the exact line
    search between the current point and that vertex. Every iterate is a convex combination
    and the norm never increases, so the result is no longer than any vertex or pair. Stops
    when the weights move less than ``tol`` (L1) or after ``max_iter`` iterations. For
    ``k = 2`` this is :func:`min_norm_2`.

    Args:
        G: the gradients, one per row (trailing dimensions are flattened).
        max_iter: Frank-Wolfe iterations at most.
        tol: L1 change of the weights below which the iteration stops.

    Returns:
        ``w[k]``, non-negative and summing to 1.
    """
    k = G.shape[0]
    G = G.reshape(k, -1)  # [k, d]
    if k == 1:
        return G.new_ones(1)
    if k == 2:
        g = min_norm_2(G[0], G[1])
        return torch.stack([g, 1 - g])
    M = G @ G.T  # [k, k]
    best_val, w = None, G.new_zeros(k)
    for i in range(k):
        for j in range(i + 1, k):
            gam = _gamma_from_gram(M[i, i], M[i, j], M[j, j])
            val = gam * gam * M[i, i] + 2 * gam * (1 - gam) * M[i, j] + (1 - gam) ** 2 * M[j, j]
            if best_val is None or val < best_val:
                best_val = val
                w = G.new_zeros(k)
                w[i], w[j] = gam, 1 - gam
    for _ in range(max_iter):
        Mw = M @ w  # [k]
        t = int(torch.argmin(Mw))
        gam = _gamma_from_gram(w @ Mw, Mw[t], M[t, t])  # keep gam of the current point
        new_w = gam * w
        new_w[t] += 1 - gam
        moved = float((new_w - w).abs().sum())
        w = new_w
        if moved < tol:
            break
    return w


def gradient_scales(grads: Sequence[Tensor], losses: Sequence[Tensor] | None,
                    normalization: str) -> list[Tensor]:
    """Per-objective divisors applied before the min-norm solve (MGDA-UB's normalisers).

    ``none``: 1; ``l2``: ``||g_i||``; ``loss``: ``|L_i|``; ``loss+``: ``|L_i| * ||g_i||``
    (each clamped away from 0). See the module docstring.

    Raises:
        SpecError: unknown ``normalization``.
        ValueError: ``loss`` or ``loss+`` without ``losses`` (or with a different count).
    """
    check_choice(normalization, NORMALIZATIONS, "normalization")
    if normalization in ("loss", "loss+") and (losses is None or len(losses) != len(grads)):
        raise ValueError(f"normalization={normalization!r} needs one loss per gradient "
                         f"({len(grads)}), got {None if losses is None else len(losses)}")
    out = []
    for i, g in enumerate(grads):
        if normalization == "none":
            s = g.new_ones(())
        elif normalization == "l2":
            s = torch.linalg.vector_norm(g)
        else:
            s = losses[i].detach().abs().to(g.dtype)  # type: ignore[index]
            if normalization == "loss+":
                s = s * torch.linalg.vector_norm(g)
        out.append(s.clamp_min(_TINY))
    return out


def mgda_weights(grads: Sequence[Tensor], *, losses: Sequence[Tensor] | None = None,
                 normalization: str = "none") -> Tensor:
    """Simplex weights ``w[k]`` of the MGDA common descent direction ``sum_i w_i g_i``.

    Args:
        grads: one gradient per objective (any shapes with equal numbers of elements).
        losses: the objectives' values, needed by the ``loss`` and ``loss+`` normalisations.
        normalization: ``none``, ``l2``, ``loss`` or ``loss+`` (module docstring); the weights
            are meant for the raw gradients.

    Returns:
        ``w[k]``: for two objectives ``[gamma, 1 - gamma]`` from :func:`min_norm_2`, otherwise
        :func:`min_norm_simplex`.
    """
    scales = gradient_scales(grads, losses, normalization)
    normed = [g.reshape(-1) / s for g, s in zip(grads, scales)]
    if len(normed) == 2:
        gamma = min_norm_2(normed[0], normed[1])
        return torch.stack([gamma, 1 - gamma])
    return min_norm_simplex(torch.stack(normed))
