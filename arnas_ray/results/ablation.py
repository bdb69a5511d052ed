"""Ablation statistics a reviewer accepts: per level of a factor, the mean with its 95% Student-t
interval; between levels, paired differences across seeds with their interval and a verdict
(``inconclusive`` where the interval contains 0). No torch.

The factors are table columns: ``placement``, ``channel_ratios``, ``strategy``,
``normalization``, ``source`` (searched / random / named). Only finished rows of the stage
count; several rows of one level and seed (e.g. two retrained networks of one search) are
averaged first, so every seed counts once.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"stage": "retrain", "status": "finished", "seed": [0, 1, 2] * 2,
    ...                    "placement": ["arnas"] * 3 + ["all-robust"] * 3,
    ...                    "pgd20_acc": [0.50, 0.52, 0.54, 0.45, 0.46, 0.50]})
    >>> s = factor_summary(df, "placement", "pgd20_acc")
    >>> list(s["level"]), [int(n) for n in s["n"]]
    (['all-robust', 'arnas'], [3, 3])
    >>> paired_differences(df, "placement", "pgd20_acc", reference="all-robust").loc[0, "verdict"]
    'arnas better'
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from arnas_ray.results.stats import mean_ci, paired_diff, paired_test

__all__ = ["FACTORS", "factor_summary", "paired_differences"]

FACTORS: tuple[str, ...] = ("placement", "channel_ratios", "strategy", "normalization", "source")
_SUMMARY_COLUMNS = ["level", "n", "mean", "std", "ci_low", "ci_high"]
_DIFF_COLUMNS = ["level", "reference", "n_pairs", "diff", "ci_low", "ci_high", "p", "verdict"]


def _per_seed(df: pd.DataFrame, by: str, metric: str, stage: str | None, pair_on: Sequence[str]) -> pd.DataFrame:
    missing = [c for c in (by, metric, *pair_on) if c not in df.columns]
    if missing:
        raise ValueError(f"unknown column(s) {missing}; columns are {list(df.columns)}")
    rows = df if stage is None or "stage" not in df.columns else df[df["stage"] == stage]
    if "status" in rows.columns:
        rows = rows[rows["status"] == "finished"]
    data = pd.DataFrame({"level": rows[by].astype(object).where(rows[by].notna(), "n/a").astype(str),
                         metric: pd.to_numeric(rows[metric], errors="coerce").astype("float64")})
    for c in pair_on:
        data[c] = rows[c].astype(object).where(rows[c].notna(), "n/a").astype(str)
    data = data[np.isfinite(data[metric])]
    return pd.DataFrame(data.groupby(["level", *pair_on], sort=True, as_index=False)[metric].mean())


def factor_summary(df: pd.DataFrame, by: str, metric: str, *, stage: str | None = "retrain",
                   pair_on: Sequence[str] = ("seed",), confidence: float = 0.95) -> pd.DataFrame:
    """Per level of ``by``: ``n`` (seeds), ``mean``, ``std`` (sample) and the ``ci_low`` /
    ``ci_high`` Student-t interval of ``metric`` (finished rows of ``stage``)."""
    data = _per_seed(df, by, metric, stage, pair_on)
    out = []
    for level, part in data.groupby("level", sort=True):
        values = part[metric].to_numpy()
        ci = mean_ci(values, confidence)
        out.append({"level": level, "n": ci.n, "mean": ci.estimate,
                    "std": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                    "ci_low": ci.low, "ci_high": ci.high})
    return pd.DataFrame(out, columns=_SUMMARY_COLUMNS)


def paired_differences(df: pd.DataFrame, by: str, metric: str, *, reference: str | None = None,
                       stage: str | None = "retrain", pair_on: Sequence[str] = ("seed",),
                       confidence: float = 0.95) -> pd.DataFrame:
    """Every level of ``by`` against ``reference`` (default: the first level), paired on
    ``pair_on`` (the seeds both levels ran): ``n_pairs``, ``diff`` (level - reference),
    ``ci_low``, ``ci_high``, ``p`` (paired t-test) and ``verdict`` (``"LEVEL better"``,
    ``"REFERENCE better"`` or ``"inconclusive"`` when the interval contains 0 or fewer than two
    pairs exist)."""
    data = _per_seed(df, by, metric, stage, pair_on)
    levels = sorted(data["level"].unique())
    if not levels:
        return pd.DataFrame(columns=_DIFF_COLUMNS)
    reference = reference if reference is not None else levels[0]
    if reference not in levels:
        raise ValueError(f"reference {reference!r} is not a level of {by!r}; levels: {levels}")
    wide = data.pivot_table(index=list(pair_on), columns="level", values=metric, aggfunc="mean")
    out = []
    for level in levels:
        if level == reference:
            continue
        pairs = wide[[level, reference]].dropna()
        diff = paired_diff(pairs[level].to_numpy(), pairs[reference].to_numpy(), confidence)
        verdict = "inconclusive" if diff.contains_zero else (f"{level} better" if diff.low > 0 else
                                                             f"{reference} better")
        out.append({"level": level, "reference": reference, "n_pairs": diff.n, "diff": diff.estimate,
                    "ci_low": diff.low, "ci_high": diff.high,
                    "p": paired_test(pairs[level].to_numpy(), pairs[reference].to_numpy()), "verdict": verdict})
    return pd.DataFrame(out, columns=_DIFF_COLUMNS)
