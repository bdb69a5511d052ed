"""arnas_ray.results.stats against scipy.stats on random samples; edge cases; no torch."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from arnas_ray.results.stats import (
    compare,
    mean_ci,
    paired_diff,
    paired_test,
    searched_vs_random,
    welch_diff,
    welch_test,
)

SAMPLES = [(n_a, n_b, seed) for seed, (n_a, n_b) in enumerate([(3, 3), (5, 8), (12, 4), (30, 30), (2, 9)])]


@pytest.mark.parametrize(("n", "seed"), [(2, 0), (3, 1), (7, 2), (50, 3)])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_mean_ci_is_the_student_t_interval(n, seed, confidence):
    x = np.random.default_rng(seed).normal(0.5, 0.1, n)
    ci = mean_ci(x, confidence)
    ref = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high), rel=1e-10)
    assert ci.estimate == pytest.approx(x.mean()) and ci.n == n and ci.df == n - 1
    assert ci.se == pytest.approx(stats.sem(x))


@pytest.mark.parametrize(("n_a", "n_b", "seed"), SAMPLES)
def test_welch_interval_and_test_match_scipy(n_a, n_b, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.55, 0.05, n_a), rng.normal(0.50, 0.10, n_b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    ci = welch_diff(a, b)
    assert (ci.low, ci.high) == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-9)
    assert ci.df == pytest.approx(ref.df, rel=1e-12)
    assert welch_test(a, b) == pytest.approx(ref.pvalue, rel=1e-9)
    assert ci.estimate == pytest.approx(a.mean() - b.mean())


@pytest.mark.parametrize(("n", "seed"), [(2, 0), (3, 4), (10, 5)])
def test_paired_interval_and_test_match_scipy(n, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.5, 0.1, n)
    b = a - rng.normal(0.02, 0.03, n)
    ref = stats.ttest_rel(a, b)
    ci = paired_diff(a, b)
    assert (ci.low, ci.high) == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-9)
    assert paired_test(a, b) == pytest.approx(ref.pvalue, rel=1e-9)


def test_non_finite_values_are_dropped_and_small_samples_give_nan():
    x = [0.5, float("nan"), 0.7, float("inf")]
    assert mean_ci(x).n == 2 and mean_ci(x).estimate == pytest.approx(0.6)
    one = mean_ci([0.4])
    assert one.estimate == 0.4 and math.isnan(one.low) and math.isnan(one.high) and one.contains_zero
    assert math.isnan(mean_ci([]).estimate)
    assert math.isnan(welch_test([0.1], [0.2, 0.3])) and math.isnan(welch_diff([0.1], [0.2, 0.3]).low)
    d = paired_diff([0.5, 0.6, float("nan")], [0.4, 0.4, 0.4])
    assert d.n == 2 and d.estimate == pytest.approx(0.15)
    with pytest.raises(ValueError, match="as many values"):
        paired_diff([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([0.1, 0.2], confidence=95)


def test_zero_variance_is_a_point_interval_with_no_p_value():
    ci = welch_diff([0.5, 0.5, 0.5], [0.4, 0.4])
    assert (ci.low, ci.high) == pytest.approx((0.1, 0.1)) and math.isnan(welch_test([0.5, 0.5], [0.4, 0.4]))
    assert compare([0.5, 0.5, 0.5], [0.4, 0.4]).verdict == "a > b"


def test_compare_verdicts_follow_the_interval():
    rng = np.random.default_rng(7)
    hi, lo = rng.normal(0.60, 0.01, 6), rng.normal(0.50, 0.01, 6)
    assert compare(hi, lo).verdict == "a > b" and compare(lo, hi).verdict == "a < b"
    noisy = rng.normal(0.55, 0.2, 3)
    c = compare(noisy, noisy[::-1] + 0.001)
    assert c.verdict == "inconclusive" and c.diff.contains_zero and c.p > 0.05
    paired = compare(hi, hi - 0.01 + rng.normal(0, 0.001, 6), paired=True)
    assert paired.paired and paired.verdict == "a > b" and paired.diff.n == 6
    d = c.to_dict()
    assert {"mean_a", "mean_b", "diff", "diff_low", "diff_high", "p", "verdict"} <= set(d)


def test_searched_vs_random_summary():
    s = searched_vs_random([0.55, 0.56, 0.54, 0.57], [0.49, 0.50, 0.47, 0.51])
    ref = stats.ttest_ind([0.55, 0.56, 0.54, 0.57], [0.49, 0.50, 0.47, 0.51], equal_var=False)
    assert s["verdict"] == "searched better" and s["p"] == pytest.approx(ref.pvalue)
    assert s["mean_searched"] == pytest.approx(0.555) and s["n_random"] == 4
    assert s["diff_low"] > 0 and s["text"].startswith("searched vs random: mean 0.555 vs 0.492")
    assert "95% CI [" in s["text"]
    flat = searched_vs_random([0.5, 0.52, 0.48], [0.51, 0.47, 0.5])
    assert flat["verdict"] == "inconclusive" and flat["diff_low"] < 0 < flat["diff_high"]


BLOCK = """
import sys
class Block:  # refuse torch and ray like an environment without them (scipy's array-API
    def find_spec(self, name, path=None, target=None):  # check trips over a None in sys.modules)
        if name.split(".")[0] in ("torch", "ray"):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
"""


def test_stats_imports_and_runs_without_torch():
    code = BLOCK + ("import arnas_ray.results.stats as s, arnas_ray._diagnostics as d\n"
                    "assert s.searched_vs_random([1.0, 2.0, 2.5], [0.0, 0.5, 1.0])['n_random'] == 3\n"
                    "assert d.degeneracy_warning(1.0, 0.0)\n"
                    "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'ray')]\n"
                    "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
