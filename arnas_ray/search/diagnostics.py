"""Per-step search diagnostics on the device, and their per-epoch collection.

:func:`step_vector` turns one architecture step's hypergradients ``u_nat``, ``u_adv``, the
combined update ``d`` and gamma into one 1-d tensor in the order of
:data:`arnas_ray._diagnostics.STEP_FIELDS`, with tensor ops only (no ``.item()``, no host
copy: nothing waits for the GPU). The norms and dot products come from one Gram matrix::

    U = [u_nat; u_adv; d]   # [3, n_alpha]
    G = U U^T               # ||u_i||^2 on the diagonal, d . u_i in the last row
    cos(u_nat, u_adv) = G[0, 1] / (||u_nat|| ||u_adv||)

:class:`EpochDiagnostics` keeps the step vectors of an epoch and copies them to the host once,
at the end of the epoch, as plain records (:func:`arnas_ray._diagnostics.step_record`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from arnas_ray._diagnostics import STEP_FIELDS, step_record, summarize_steps

__all__ = ["EpochDiagnostics", "op_entropy", "step_vector"]

_TINY = 1e-30


def _flat(grads: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    return torch.cat([g.detach().reshape(-1).to(dtype) for g in grads])  # [n_alpha]


def _mean_entropy(alphas: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    """Mean over all edges (rows) of the entropy of ``softmax(alpha_row)``, in nats."""
    rows = torch.cat([a.detach().reshape(-1, a.shape[-1]).to(dtype) for a in alphas])  # [E_total, K]
    logp = torch.log_softmax(rows, dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


def step_vector(u_nat: Sequence[Tensor] | None, u_adv: Sequence[Tensor] | None, direction: Sequence[Tensor],
                gamma: Tensor, losses: Sequence[Tensor | None], alphas: Sequence[Tensor]) -> Tensor:
    """The :data:`~arnas_ray._diagnostics.STEP_FIELDS` of one architecture step, on the device.

    Args:
        u_nat, u_adv: the hypergradients (shaped like the alphas), None where not computed.
        direction: the combined update ``d`` (the alphas' gradient).
        gamma: the weight of the natural objective (0-d).
        losses: ``[f1, f2]`` (0-d or None).
        alphas: the architecture parameters (for the op-weight entropy).

    Returns:
        ``Tensor[len(STEP_FIELDS)]`` (float64; float32 on MPS), ``nan`` where a value was not
        computed.
    """
    ref = direction[0]
    dtype = torch.float32 if ref.device.type == "mps" else torch.float64
    d = _flat(direction, dtype)
    present = [u is not None for u in (u_nat, u_adv)]
    rows = [_flat(u, dtype) if u is not None else torch.zeros_like(d) for u in (u_nat, u_adv)]
    U = torch.stack([*rows, d])  # [3, n_alpha]
    G = U @ U.T  # [3, 3]
    norms = G.diagonal().clamp_min(0.0).sqrt()  # [3]
    cos = G[0, 1] / (norms[0] * norms[1]).clamp_min(_TINY)
    nan = torch.full((), math.nan, dtype=dtype, device=ref.device)

    def given(value: Tensor | None, ok: bool = True) -> Tensor:
        return value.detach().to(dtype).reshape(()) if value is not None and ok else nan

    values = {
        "gamma": given(gamma), "loss_nat": given(losses[0]), "loss_adv": given(losses[1]),
        "norm_nat": given(norms[0], present[0]), "norm_adv": given(norms[1], present[1]), "norm_d": norms[2],
        "cos": given(cos, all(present)), "dot_nat": given(G[2, 0], present[0]),
        "dot_adv": given(G[2, 1], present[1]), "entropy": _mean_entropy(alphas, dtype),
    }
    return torch.stack([values[name] for name in STEP_FIELDS])


@torch.no_grad()
def op_entropy(alphas: Mapping[str, Tensor]) -> dict[str, float]:
    """Mean entropy (nats) of the op weights per cell type (``entropy_<type>``) and over all
    edges of all cell types (``entropy_mean``). One host copy."""
    names = list(alphas)
    per = [_mean_entropy([alphas[n]], torch.float32) for n in names]
    every = _mean_entropy([alphas[n] for n in names], torch.float32)
    values = torch.stack([*per, every]).tolist()
    out = {f"entropy_{n}": float(v) for n, v in zip(names, values[:-1])}
    out["entropy_mean"] = float(values[-1])
    return out


class EpochDiagnostics:
    """Collects one epoch's step vectors (or gammas only) and makes records and summaries.

    Args:
        epoch: the 1-based epoch the steps belong to.
        strategy: the strategy the epoch's steps used.
    """

    def __init__(self, epoch: int, strategy: str):
        self.epoch, self.strategy = epoch, strategy
        self._rows: list[Tensor] = []

    def add(self, vector: Tensor | None, gamma: Tensor) -> None:
        """One step: its :func:`step_vector`, or None (diagnostics off: only gamma is kept)."""
        self._rows.append(vector if vector is not None else gamma.detach().reshape(1))

    def records(self) -> list[dict[str, Any]]:
        """The per-step records (one host copy for the whole epoch)."""
        if not self._rows:
            return []
        dtype = torch.float32 if self._rows[0].device.type == "mps" else torch.float64
        width = len(STEP_FIELDS)
        rows = [r.detach().reshape(-1).to(dtype) for r in self._rows]
        rows = [r if r.numel() == width else torch.cat([r, r.new_full((width - r.numel(),), math.nan)])
                for r in rows]
        table = torch.stack(rows).tolist()  # [steps, width]: the epoch's one host copy
        return [step_record(row, epoch=self.epoch, step=i, strategy=self.strategy) for i, row in enumerate(table)]

    @staticmethod
    def summary(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        return summarize_steps(records)
