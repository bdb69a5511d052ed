"""The fidelity study's claim table (arnas_ray.results.fidelity) on hand-built tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from arnas_ray.results.fidelity import CLAIMS, Claim, claim_table, combine_runs, gamma_table


def _row(run: str, seed: int, acc: float, **kw) -> dict:
    base = {"stage": "retrain", "status": "finished", "source": "searched", "placement": "arnas",
            "channel_ratios": "[1, 2, 2]", "strategy": "mgda", "order": "first", "seed": seed,
            "nat_acc": acc, "pgd20_acc": acc / 2}
    return {**base, **kw, "run": run}


def _claim(cid: str) -> list[Claim]:
    return [c for c in CLAIMS if c.id == cid]


def test_paired_claim_matches_scipy_and_answers_each_way() -> None:
    rng = np.random.default_rng(0)
    mgda = rng.uniform(0.5, 0.6, 4)
    rows = [_row("s", i, a) for i, a in enumerate(mgda)]
    rows += [_row("s", i, a - 0.1 + d, strategy="fixed") for i, (a, d) in enumerate(zip(mgda, rng.normal(0, 0.01, 4)))]
    rows += [_row("s", i, a + 0.2, strategy="adversarial") for i, a in enumerate(mgda)][:3]
    out = claim_table(pd.DataFrame(rows), metrics=["nat_acc"], claims=_claim("c1") + _claim("c2")).set_index("claim")
    fixed = [r["nat_acc"] for r in rows if r["strategy"] == "fixed"]
    d = mgda - np.array(fixed)
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert out.loc["c1", "diff"] == pytest.approx(d.mean())
    assert (out.loc["c1", "ci_low"], out.loc["c1", "ci_high"]) == pytest.approx((lo, hi))
    assert out.loc["c1", "p"] == pytest.approx(stats.ttest_rel(mgda, fixed).pvalue)
    assert out.loc["c1", "answer"] == "confirmed"
    assert out.loc["c2", "answer"] == "refuted" and out.loc["c2", "n_level"] == 3  # the seeds both ran


def test_unpaired_claim_is_welch_and_filters_apply() -> None:
    searched = [0.50, 0.52, 0.55]
    random = [0.51, 0.49, 0.53, 0.50]
    rows = [_row("fidelity-strategy", i, a) for i, a in enumerate(searched)]
    rows += [_row("fidelity-strategy", 10 + i, a, source="random", strategy=None, order=None)
             for i, a in enumerate(random)]
    rows += [_row("other-run", 20 + i, 0.99, source="random") for i in range(3)]  # filtered out by run
    rows += [_row("fidelity-strategy", 30, 0.0, source="random", status="failed")]  # not finished
    out = claim_table(pd.DataFrame(rows), metrics=["pgd20_acc"], claims=_claim("d")).iloc[0]
    a, b = np.array(searched) / 2, np.array(random) / 2
    assert (out["n_level"], out["n_reference"]) == (3, 4)
    assert out["p"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert out["answer"] == "inconclusive" and out["ci_low"] < 0 < out["ci_high"]


def test_claims_without_data_are_not_run_and_seeds_average_first() -> None:
    rows = [_row("s", 1, 0.5), _row("s", 1, 0.7), _row("s", 2, 0.6), _row("s", 3, 0.62),
            _row("s", 1, 0.4, strategy="fixed"), _row("s", 2, 0.45, strategy="fixed"), _row("s", 3, 0.5, strategy="fixed")]
    out = claim_table(pd.DataFrame(rows), metrics=["nat_acc"]).set_index("claim")
    assert out.loc["a", "answer"] == "not run" and out.loc["e", "answer"] == "not run"
    assert out.loc["c1", "mean_level"] == pytest.approx(np.mean([0.6, 0.6, 0.62]))  # seed 1: (0.5 + 0.7) / 2


def test_combine_runs_and_gamma_table() -> None:
    search = pd.DataFrame([{"stage": "search", "status": "finished", "strategy": "mgda", "order": "first",
                            "gamma_mean": g, "gamma_frac_0": 0.0, "gamma_frac_1": 0.0, "cos_mean": 0.1,
                            "nat_acc": 0.6, "pgd_acc": 0.3} for g in (0.2, 0.4)])
    both = combine_runs({"x": search, "y": search.assign(gamma_mean=[0.9, 1.0], status=["finished", "failed"])})
    assert list(both["run"]) == ["x", "x", "y", "y"]
    g = gamma_table(both)
    assert g.loc[("x", "mgda", "first"), ("gamma_mean", "mean")] == pytest.approx(0.3)
    assert g.loc[("y", "mgda", "first"), ("trials", "")] == 1
