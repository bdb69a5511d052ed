"""Ablation statistics: per-level intervals and paired differences across seeds, checked against
scipy.stats on random samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from arnas_ray.results.ablation import factor_summary, paired_differences


def _frame(rng: np.random.Generator, means: dict[str, float], seeds: int, noise: float = 0.02) -> pd.DataFrame:
    rows = []
    for level, mean in means.items():
        for seed in range(seeds):
            shared = 0.01 * seed  # a seed effect both levels share: pairing removes it
            rows.append({"stage": "retrain", "status": "finished", "placement": level, "seed": seed,
                         "pgd20_acc": mean + shared + rng.normal(0, noise)})
    rows.append({"stage": "retrain", "status": "failed", "placement": "arnas", "seed": 99, "pgd20_acc": 0.0})
    rows.append({"stage": "search", "status": "finished", "placement": "arnas", "seed": 0, "pgd20_acc": 1.0})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(5))
def test_against_scipy_on_random_samples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    df = _frame(rng, {"arnas": 0.55, "all-robust": 0.50}, seeds=int(rng.integers(3, 8)))
    summary = factor_summary(df, "placement", "pgd20_acc").set_index("level")
    for level in ("arnas", "all-robust"):
        values = df[(df.placement == level) & (df.stage == "retrain") & (df.status == "finished")].pgd20_acc
        low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
        assert summary.loc[level, "n"] == len(values)
        assert summary.loc[level, "mean"] == pytest.approx(values.mean())
        assert summary.loc[level, "std"] == pytest.approx(values.std(ddof=1))
        assert (summary.loc[level, "ci_low"], summary.loc[level, "ci_high"]) == pytest.approx((low, high))
    diff = paired_differences(df, "placement", "pgd20_acc", reference="all-robust").iloc[0]
    a = df[(df.placement == "arnas") & (df.stage == "retrain") & (df.status == "finished")].sort_values("seed")
    b = df[(df.placement == "all-robust") & (df.stage == "retrain")].sort_values("seed")
    d = a.pgd20_acc.to_numpy() - b.pgd20_acc.to_numpy()
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert diff["n_pairs"] == len(d) and diff["diff"] == pytest.approx(d.mean())
    assert (diff["ci_low"], diff["ci_high"]) == pytest.approx((low, high))
    assert diff["p"] == pytest.approx(stats.ttest_rel(a.pgd20_acc, b.pgd20_acc).pvalue)


def test_verdicts_and_pairing() -> None:
    rng = np.random.default_rng(1)
    clear = paired_differences(_frame(rng, {"arnas": 0.60, "all-robust": 0.50}, seeds=5), "placement",
                               "pgd20_acc", reference="all-robust")
    assert clear.loc[0, "verdict"] == "arnas better" and clear.loc[0, "ci_low"] > 0
    same = paired_differences(_frame(rng, {"arnas": 0.50, "all-robust": 0.50}, seeds=4, noise=0.05), "placement",
                              "pgd20_acc", reference="all-robust")
    assert same.loc[0, "verdict"] == "inconclusive"
    one = paired_differences(_frame(rng, {"arnas": 0.60, "all-robust": 0.50}, seeds=1), "placement", "pgd20_acc",
                             reference="all-robust")
    assert one.loc[0, "n_pairs"] == 1 and one.loc[0, "verdict"] == "inconclusive"  # no interval from one pair
    with pytest.raises(ValueError, match="reference 'nope'"):
        paired_differences(_frame(rng, {"a": 0.5, "b": 0.5}, seeds=2), "placement", "pgd20_acc", reference="nope")
    with pytest.raises(ValueError, match="unknown column"):
        factor_summary(pd.DataFrame({"x": [1]}), "placement", "pgd20_acc")
