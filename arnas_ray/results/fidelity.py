"""The fidelity study (``docs/fidelity.md``): each claim of ARNAS answered from the tables of the
sweeps that test it (``examples/fidelity/*.yaml``). No torch.

A claim compares one level of a factor (a table column) with a reference level, on the
finished retrained networks that match its filter: paired on the seed (same seed, same data
split and initialisation) where both arms ran the same seeds, independent samples (Welch)
for searched against random genotypes. Its answer per metric is ``confirmed`` (the 95% interval
of level - reference lies above 0), ``refuted`` (below 0) or ``inconclusive``; ``not run``
when the tables hold no pair.

Example:
    >>> import pandas as pd
    >>> rows = [{"run": "r", "stage": "retrain", "status": "finished", "source": "searched",
    ...          "placement": "arnas", "channel_ratios": "[1, 2, 2]", "strategy": s, "order": "first",
    ...          "seed": seed, "nat_acc": acc, "pgd20_acc": acc / 2}
    ...         for s, accs in (("mgda", (0.9, 0.92, 0.95)), ("fixed", (0.8, 0.81, 0.86)))
    ...         for seed, acc in zip((1, 2, 3), accs)]
    >>> out = claim_table(pd.DataFrame(rows), claims=[c for c in CLAIMS if c.id == "c1"])
    >>> list(out["answer"])
    ['confirmed', 'confirmed']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from arnas_ray.results.ablation import _per_seed
from arnas_ray.results.stats import compare

__all__ = ["CLAIMS", "Claim", "claim_table", "combine_runs", "gamma_table"]

ANSWERS = {"a > b": "confirmed", "a < b": "refuted"}


@dataclass(frozen=True)
class Claim:
    """``level`` against ``reference`` in column ``factor``, on the retrained rows matching ``where``."""

    id: str
    text: str
    factor: str
    level: str
    reference: str
    where: Mapping[str, Any] = field(default_factory=dict)
    paired: bool = True


_SEARCHED = {"source": "searched"}
_FIRST_MGDA = {**_SEARCHED, "strategy": "mgda", "order": "first"}

#: the claims of docs/fidelity.md, (a)-(e)
CLAIMS: tuple[Claim, ...] = (
    Claim("a", "accurate cells near the input, robust near the output (arnas) beat the alternating pattern",
          "placement", "arnas", "alternate", _FIRST_MGDA),
    Claim("b", "ratios 1:2:2 beat 1:2:4 at an equal sum of stage widths (same cell placement)",
          "placement", "arnas", "arnas-124", _FIRST_MGDA),
    Claim("c1", "MGDA beats fixed weights (1, 1)", "strategy", "mgda", "fixed",
          {**_SEARCHED, "placement": "arnas", "order": "first"}),
    Claim("c2", "MGDA beats adversarial-only architecture steps", "strategy", "mgda", "adversarial",
          {**_SEARCHED, "placement": "arnas", "order": "first"}),
    Claim("d", "searched networks (every strategy) beat random ones of the same space, layout, widths and size",
          "source", "searched", "random", {"placement": "arnas", "run": "fidelity-strategy"}, paired=False),
    Claim("e", "the second-order hypergradient beats the first-order one", "order", "second", "first",
          {**_SEARCHED, "placement": "arnas", "strategy": "mgda"}),
    Claim("e2", "the exact hypergradient beats the first-order one", "order", "exact", "first",
          {**_SEARCHED, "placement": "arnas", "strategy": "mgda"}),
    Claim("e3", "the exact hypergradient beats the finite-difference second order", "order", "exact", "second",
          {**_SEARCHED, "placement": "arnas", "strategy": "mgda"}),
)


def combine_runs(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The tables of several run directories in one frame, with a ``run`` column (its key)."""
    parts = [t.assign(run=name) for name, t in tables.items()]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _matching(df: pd.DataFrame, where: Mapping[str, Any]) -> pd.DataFrame:
    """Finished retrained rows whose columns equal ``where``'s values (compared as text)."""
    rows = df[(df["stage"] == "retrain") & (df["status"] == "finished")]
    for col, value in where.items():
        if col not in rows:
            return rows.iloc[0:0]
        rows = rows[rows[col].astype(str) == str(value)]
    return rows


def _arms(rows: pd.DataFrame, claim: Claim, metric: str) -> tuple[np.ndarray, np.ndarray]:
    if not claim.paired:  # every network counts (baselines share one seed)
        values = pd.to_numeric(rows[metric], errors="coerce").to_numpy(float)
        level = rows[claim.factor].astype(str).to_numpy()
        ok = np.isfinite(values)
        return values[ok & (level == claim.level)], values[ok & (level == claim.reference)]
    # one value per seed and arm (several retrained networks of one seed are averaged first)
    wide = _per_seed(rows, claim.factor, metric, None, ("seed",)).pivot_table(
        index="seed", columns="level", values=metric)
    if claim.level not in wide or claim.reference not in wide:
        return np.array([]), np.array([])
    pairs = wide[[claim.level, claim.reference]].dropna()
    return pairs[claim.level].to_numpy(float), pairs[claim.reference].to_numpy(float)


def claim_table(df: pd.DataFrame, metrics: Sequence[str] = ("nat_acc", "pgd20_acc"),
                claims: Iterable[Claim] = CLAIMS, confidence: float = 0.95) -> pd.DataFrame:
    """One row per claim and metric: ``n`` (pairs, or ``n_level``/``n_reference``), the arms'
    means, ``diff`` (level - reference) with its ``ci_low``/``ci_high``, ``p`` and ``answer``."""
    out = []
    for claim in claims:
        rows = _matching(df, claim.where) if claim.factor in df.columns else df.iloc[0:0]
        for metric in metrics:
            base = {"claim": claim.id, "statement": claim.text, "metric": metric, "level": claim.level,
                    "reference": claim.reference, "paired": claim.paired}
            a, b = _arms(rows, claim, metric) if metric in rows.columns else (np.array([]), np.array([]))
            if min(len(a), len(b)) < 2:
                out.append({**base, "n_level": len(a), "n_reference": len(b), "answer": "not run"})
                continue
            c = compare(a, b, paired=claim.paired, confidence=confidence)
            out.append({**base, "n_level": c.n_a, "n_reference": c.n_b, "mean_level": c.mean_a,
                        "mean_reference": c.mean_b, "diff": c.diff.estimate, "ci_low": c.diff.low,
                        "ci_high": c.diff.high, "p": c.p, "answer": ANSWERS.get(c.verdict, "inconclusive")})
    cols = ["claim", "statement", "metric", "level", "reference", "paired", "n_level", "n_reference",
            "mean_level", "mean_reference", "diff", "ci_low", "ci_high", "p", "answer"]
    return pd.DataFrame(out).reindex(columns=cols)


def gamma_table(df: pd.DataFrame, by: Sequence[str] = ("run", "strategy", "order")) -> pd.DataFrame:
    """MGDA's weight of the natural objective in the search trials: per group of ``by``, the
    mean over trials of ``gamma_mean``, ``gamma_frac_0``, ``gamma_frac_1``, ``cos_mean``, and
    the trials' supernet accuracies."""
    rows = df[(df["stage"] == "search") & (df["status"] == "finished")]
    cols = [c for c in ("gamma_mean", "gamma_frac_0", "gamma_frac_1", "cos_mean", "nat_acc", "pgd_acc")
            if c in rows.columns]
    keys = [k for k in by if k in rows.columns]
    numeric = rows[cols].apply(pd.to_numeric, errors="coerce")
    grouped = pd.concat([rows[keys].astype(str), numeric], axis=1).groupby(keys, sort=True)
    out: pd.DataFrame = grouped.agg(["mean", "min", "max"])
    out[("trials", "")] = grouped.size()
    return out
