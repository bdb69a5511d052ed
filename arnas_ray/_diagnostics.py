"""Search diagnostics as plain data: per-step records, per-epoch summaries, the degeneracy rule.

Torch-free (stdlib only), so ``results/`` and ``sweep/`` can read and judge a search's records.
The search (:mod:`arnas_ray.search.diagnostics`) measures, at every architecture step, one
vector of :data:`STEP_FIELDS` on the device; once per epoch it is copied to the host and turned
into records by :func:`step_record`:

* ``gamma``: weight of the natural objective in the update ``d = gamma u_nat + (1 - gamma)
  u_adv`` (MGDA; ``fixed``: ``w_nat / (w_nat + w_adv)``; ``natural``: 1; ``adversarial``: 0).
* ``loss_nat``, ``loss_adv``: the objectives ``f1``, ``f2 = adv_coef * CE`` on the validation batch.
* ``norm_nat``, ``norm_adv``, ``norm_d``: L2 norms of the hypergradients and of ``d``.
* ``cos``: ``cos(u_nat, u_adv)``.
* ``dot_nat``, ``dot_adv``: ``d . u_nat`` and ``d . u_adv``.
* ``entropy``: mean entropy (nats) of the op weights ``softmax(alpha)`` over every edge of
  every cell type, after the step.
* ``descent`` (derived): ``d . u_i >= -DESCENT_TOL * ||d|| ||u_i||`` for every objective that
  was computed: ``-d`` (the update the alphas take) decreases every objective to first
  order. MGDA without normalisation passes by construction (``d . u_i >= ||d||^2``); a
  normalised or fixed weighting may not.

Values that were not computed (the other objective under ``natural`` / ``adversarial``, or
everything but ``gamma`` with diagnostics off) are ``None`` in records and ``nan`` in summaries.

Example:
    >>> rec = step_record([0.5, 1.0, 0.2, 1.0, 1.0, 0.7071, 0.0, 0.5, 0.5, 1.9], epoch=1, step=0)
    >>> rec["descent"], rec["gamma"]
    (True, 0.5)
    >>> degeneracy_warning(0.95, 0.0) is not None
    True
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "DEGENERACY_THRESHOLD",
    "DESCENT_TOL",
    "EPOCH_FIELDS",
    "GAMMA_TOL",
    "MEAN_MARGIN",
    "STEP_FIELDS",
    "degeneracy_warning",
    "edges_changed",
    "mgda_fractions",
    "search_degeneracy",
    "step_record",
    "summarize_steps",
]

STEP_FIELDS: tuple[str, ...] = ("gamma", "loss_nat", "loss_adv", "norm_nat", "norm_adv", "norm_d", "cos",
                                "dot_nat", "dot_adv", "entropy")
# per-epoch summary metrics of summarize_steps (in this order)
EPOCH_FIELDS: tuple[str, ...] = (
    "gamma_mean", "gamma_min", "gamma_max", "gamma_frac_0", "gamma_frac_1", "gamma_frac_half",
    "cos_mean", "descent_frac", "norm_nat_mean", "norm_adv_mean", "norm_d_mean",
    "loss_nat_mean", "loss_adv_mean",
)
GAMMA_TOL = 1e-6  # gamma counts as 0, 1 or 0.5 within this distance
DESCENT_TOL = 1e-6  # relative slack of the descent check (rounding at a Pareto-stationary point)
DEGENERACY_THRESHOLD = 0.9  # fraction of steps that makes a search degenerate
MEAN_MARGIN = 0.05  # a mean gamma this close to 0 or 1 also leaves one objective all but alone

_NAN = float("nan")


def _num(value: Any) -> float | None:
    """A finite-or-infinite float, or None for a missing (nan / None) value."""
    if value is None:
        return None
    v = float(value)
    return None if math.isnan(v) else v


def step_record(values: Sequence[float], *, epoch: int, step: int, strategy: str | None = None) -> dict[str, Any]:
    """One per-step record from a row of :data:`STEP_FIELDS` (``nan`` = not computed).

    Args:
        values: the row, in :data:`STEP_FIELDS` order; a shorter row leaves the rest ``None``.
        epoch: 1-based epoch; step: 0-based step in the epoch.
        strategy: the strategy the step used (recorded when given).

    Returns:
        ``{"epoch", "step", [strategy,] *STEP_FIELDS, "descent"}`` with plain JSON values;
        ``descent`` is ``None`` when no hypergradient norm was recorded.
    """
    rec: dict[str, Any] = {"epoch": int(epoch), "step": int(step)}
    if strategy is not None:
        rec["strategy"] = strategy
    for i, name in enumerate(STEP_FIELDS):
        rec[name] = _num(values[i]) if i < len(values) else None
    rec["descent"] = _descent(rec)
    return rec


def _descent(rec: Mapping[str, Any]) -> bool | None:
    checks = []
    norm_d = rec.get("norm_d")
    for obj in ("nat", "adv"):
        dot, norm = rec.get(f"dot_{obj}"), rec.get(f"norm_{obj}")
        if dot is None or norm is None or norm_d is None:
            continue
        checks.append(dot >= -DESCENT_TOL * norm_d * norm)
    return all(checks) if checks else None


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else _NAN


def _frac(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else _NAN


def summarize_steps(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Per-epoch summaries (:data:`EPOCH_FIELDS`) of per-step records.

    ``gamma_frac_0`` / ``gamma_frac_1`` / ``gamma_frac_half``: fractions of steps with gamma
    within :data:`GAMMA_TOL` of 0, 1 and 0.5; ``descent_frac``: fraction of the steps with a
    descent check that passed it; ``*_mean``: means over the steps that recorded the value.
    Every summary is ``nan`` when no step recorded its inputs.
    """
    recs = list(records)

    def col(name: str) -> list[float]:
        return [r[name] for r in recs if r.get(name) is not None]

    gammas = col("gamma")
    out: dict[str, float] = {
        "gamma_mean": _mean(gammas),
        "gamma_min": min(gammas) if gammas else _NAN,
        "gamma_max": max(gammas) if gammas else _NAN,
        "gamma_frac_0": _frac([abs(g) <= GAMMA_TOL for g in gammas]),
        "gamma_frac_1": _frac([abs(g - 1.0) <= GAMMA_TOL for g in gammas]),
        "gamma_frac_half": _frac([abs(g - 0.5) <= GAMMA_TOL for g in gammas]),
        "cos_mean": _mean(col("cos")),
        "descent_frac": _frac([bool(r["descent"]) for r in recs if r.get("descent") is not None]),
    }
    for name in ("norm_nat", "norm_adv", "norm_d", "loss_nat", "loss_adv"):
        out[f"{name}_mean"] = _mean(col(name))
    return out


def degeneracy_warning(frac_gamma_0: float, frac_gamma_1: float, *, frac_gamma_half: float | None = None,
                       gamma_mean: float | None = None, normalization: str | None = None,
                       threshold: float = DEGENERACY_THRESHOLD, mean_margin: float = MEAN_MARGIN) -> str | None:
    """The warning for an MGDA search whose weighting was not dynamic, or None.

    Args:
        frac_gamma_0: fraction of MGDA steps with gamma (natural weight) at 0.
        frac_gamma_1: fraction with gamma at 1.
        frac_gamma_half: fraction with gamma at 0.5 (None: not checked).
        gamma_mean: mean gamma over the MGDA steps (None: not checked).
        normalization: the MGDA normalisation (named in the 0.5 message when ``l2``).
        threshold: the fraction that makes a search degenerate (0.9).
        mean_margin: a ``gamma_mean <= mean_margin`` (``>= 1 - mean_margin``) is degenerate
            too, "almost only" (0.05: e.g. the default weighting's gamma of 0.004..0.025).

    Returns:
        ``"followed only the adversarial objective (...)"`` when ``frac_gamma_0 >= threshold``,
        ``"followed only the natural objective (...)"`` when ``frac_gamma_1 >= threshold``, a
        fixed-equal-weighting message when ``frac_gamma_half >= threshold``, then ``"followed
        almost only the adversarial (natural) objective (...)"`` for a mean gamma within
        ``mean_margin`` of 0 (1), else None. ``nan`` values (no MGDA step) give None.
    """
    def hit(f: float | None) -> bool:
        return f is not None and not math.isnan(f) and f >= threshold

    if hit(frac_gamma_0):
        return f"followed only the adversarial objective (gamma = 0 at {frac_gamma_0:.0%} of the MGDA steps)"
    if hit(frac_gamma_1):
        return f"followed only the natural objective (gamma = 1 at {frac_gamma_1:.0%} of the MGDA steps)"
    if hit(frac_gamma_half):
        why = (": with 'l2' normalisation two unit-length gradients always meet at their midpoint"
               if normalization == "l2" else "")
        return (f"fixed equal weighting, not a dynamic one (gamma = 0.5 at {frac_gamma_half:.0%} of the MGDA "
                f"steps{why})")
    if gamma_mean is not None and not math.isnan(gamma_mean):
        if gamma_mean <= mean_margin:
            return f"followed almost only the adversarial objective (mean gamma {gamma_mean:.3f} over the MGDA steps)"
        if gamma_mean >= 1.0 - mean_margin:
            return f"followed almost only the natural objective (mean gamma {gamma_mean:.3f} over the MGDA steps)"
    return None


def mgda_fractions(history: Iterable[Mapping[str, Any]]) -> tuple[int, dict[str, float]]:
    """Step-weighted ``gamma_frac_0`` / ``_1`` / ``_half`` and ``gamma_mean`` over the MGDA epochs of a per-epoch
    history (epochs with another ``strategy_used``, e.g. the adversarial warm-up, or without
    the summaries are left out), and the number of steps they cover."""
    steps = 0
    sums = {"gamma_frac_0": 0.0, "gamma_frac_1": 0.0, "gamma_frac_half": 0.0, "gamma_mean": 0.0}
    for h in history:
        n = int(h.get("steps") or 0)
        if h.get("strategy_used", "mgda") != "mgda" or n <= 0:
            continue
        if any(h.get(k) is None or math.isnan(float(h[k])) for k in sums):
            continue
        steps += n
        for k in sums:
            sums[k] += float(h[k]) * n
    return steps, {k: (v / steps if steps else _NAN) for k, v in sums.items()}


def search_degeneracy(history: Iterable[Mapping[str, Any]], *, normalization: str | None = None,
                      threshold: float = DEGENERACY_THRESHOLD) -> str | None:
    """:func:`degeneracy_warning` over every MGDA epoch of a search's per-epoch history.

    Args:
        history: per-epoch metrics (``history.jsonl`` lines, Tune results, the checkpoint's
            history) with ``steps``, ``strategy_used`` and the ``gamma_frac_*`` summaries;
            warm-up (adversarial) and non-MGDA epochs are left out.
        normalization: the search's MGDA normalisation.
    """
    _, fracs = mgda_fractions(history)
    return degeneracy_warning(fracs["gamma_frac_0"], fracs["gamma_frac_1"], frac_gamma_half=fracs["gamma_frac_half"],
                              gamma_mean=fracs["gamma_mean"], normalization=normalization, threshold=threshold)


def _cells(genotype: Mapping[str, Any] | str) -> Mapping[str, Any]:
    data = json.loads(genotype) if isinstance(genotype, str) else genotype
    return data["cells"] if "cells" in data else data


def edges_changed(before: Mapping[str, Any] | str, after: Mapping[str, Any] | str) -> int:
    """How many edges of ``after`` are not in ``before``: per cell type and node, the
    (op, input) pairs it does not share with the same node of ``before`` (the order of a
    node's two edges does not count). A cell type or node missing from ``before`` counts all
    its edges.

    Args:
        before, after: genotypes as ``Genotype.to_dict()`` dicts or their JSON strings.
    """
    old, new = _cells(before), _cells(after)
    changed = 0
    for ctype, cell in new.items():
        edges = [tuple(e) for e in cell["edges"]]
        prev = [tuple(e) for e in old[ctype]["edges"]] if ctype in old else []
        for k in range(0, len(edges), 2):
            remaining = list(prev[k:k + 2])
            for e in edges[k:k + 2]:
                if e in remaining:
                    remaining.remove(e)
                else:
                    changed += 1
    return changed
