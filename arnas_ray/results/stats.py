"""Confidence intervals and tests for comparing runs (no torch): Student t, Welch, paired.

An ablation or a searched-vs-random comparison on a few seeds says something only with its
uncertainty. The functions here take plain sequences of one metric (non-finite values, e.g.
failed trials, are dropped and not counted) and give:

* :func:`mean_ci`: the mean and its Student-t interval, ``mean +- t_{1-a/2, n-1} s / sqrt(n)``.
* :func:`welch_diff` / :func:`welch_test`: the difference of two independent means,
  ``mean(a) - mean(b) +- t_{1-a/2, nu} sqrt(s_a^2/n_a + s_b^2/n_b)`` with the
  Welch-Satterthwaite ``nu``, and the two-sided p-value of Welch's t-test.
* :func:`paired_diff` / :func:`paired_test`: the same for paired samples (e.g. two methods
  on the same seeds): the interval of the mean of ``a_i - b_i``, and the paired t-test.
* :func:`compare` and :func:`searched_vs_random`: both means, the interval of the difference,
  the p-value and a verdict (``"a > b"``, ``"a < b"`` or ``"inconclusive"`` when the interval
  contains 0).

With fewer than two values (per sample) the interval and p are ``nan``; with zero variance the
interval is the point ``[d, d]`` and p is ``nan`` (as in ``scipy.stats``).

Example:
    >>> ci = mean_ci([0.50, 0.52, 0.55, 0.49])
    >>> round(ci.estimate, 3), ci.n, ci.low < ci.estimate < ci.high
    (0.515, 4, True)
    >>> searched_vs_random([0.55, 0.56, 0.54], [0.49, 0.50, 0.47])["verdict"]
    'a > b'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as _st

__all__ = [
    "Comparison",
    "Interval",
    "compare",
    "mean_ci",
    "paired_diff",
    "paired_test",
    "searched_vs_random",
    "welch_diff",
    "welch_test",
]

_NAN = float("nan")


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval ``[low, high]``.

    Attributes:
        estimate: the mean (or the difference of means).
        low, high: the interval's bounds (``nan`` when undefined).
        n: the number of values (of differences for a paired interval; ``n_a + n_b`` for Welch).
        se: the standard error of the estimate.
        df: the t distribution's degrees of freedom.
        confidence: e.g. 0.95.
    """

    estimate: float
    low: float
    high: float
    n: int
    se: float
    df: float
    confidence: float

    @property
    def contains_zero(self) -> bool:
        """True when 0 lies in the interval or the interval is undefined (inconclusive)."""
        return not (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _values(x: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    return a[np.isfinite(a)]


def _check(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`0 < confidence < 1` must hold, but got confidence={confidence!r}")


def _interval(estimate: float, se: float, df: float, n: int, confidence: float) -> Interval:
    if not (df > 0 and math.isfinite(se)):
        return Interval(estimate, _NAN, _NAN, n, se, df, confidence)
    half = float(_st.t.ppf(0.5 + confidence / 2, df)) * se
    return Interval(estimate, estimate - half, estimate + half, n, se, df, confidence)


def _p_two_sided(estimate: float, se: float, df: float) -> float:
    if not (df > 0 and se > 0 and math.isfinite(se)):
        return _NAN
    return float(2 * _st.t.sf(abs(estimate / se), df))


def mean_ci(x: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """The mean of ``x`` with its Student-t confidence interval (module docstring)."""
    _check(confidence)
    a = _values(x)
    n = int(a.size)
    mean = float(a.mean()) if n else _NAN
    se = float(a.std(ddof=1) / math.sqrt(n)) if n >= 2 else _NAN
    return _interval(mean, se, n - 1.0, n, confidence)


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(difference, standard error, Welch-Satterthwaite degrees of freedom)."""
    na, nb = a.size, b.size
    diff = float(a.mean() - b.mean()) if na and nb else _NAN
    if na < 2 or nb < 2:
        return diff, _NAN, _NAN
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    se = float(math.sqrt(va + vb))
    if se == 0.0:
        return diff, 0.0, float(na + nb - 2)
    df = float((va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1)))
    return diff, se, df


def welch_diff(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
               confidence: float = 0.95) -> Interval:
    """``mean(a) - mean(b)`` of two independent samples with its Welch confidence interval."""
    _check(confidence)
    va, vb = _values(a), _values(b)
    diff, se, df = _welch(va, vb)
    return _interval(diff, se, df, int(va.size + vb.size), confidence)


def welch_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test of ``mean(a) == mean(b)``."""
    diff, se, df = _welch(_values(a), _values(b))
    return _p_two_sided(diff, se, df)


def _pairs(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    x, y = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired samples need as many values, got {x.size} and {y.size}")
    d = x - y
    return d[np.isfinite(d)]  # a pair with a missing value is dropped


def paired_diff(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                confidence: float = 0.95) -> Interval:
    """The mean of ``a_i - b_i`` with its Student-t interval (pairs with a non-finite value dropped).

    Raises:
        ValueError: ``a`` and ``b`` differ in length.
    """
    return mean_ci(_pairs(a, b), confidence)


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided p-value of the paired t-test of ``mean(a - b) == 0``."""
    ci = mean_ci(_pairs(a, b))
    return _p_two_sided(ci.estimate, ci.se, ci.df)


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b``: both means and sizes, the interval of ``mean(a) - mean(b)``, p, verdict."""

    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    diff: Interval
    p: float
    paired: bool
    verdict: str  # "a > b", "a < b" or "inconclusive" (the interval contains 0 or is undefined)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "diff"}
        out.update(diff=self.diff.estimate, diff_low=self.diff.low, diff_high=self.diff.high,
                   confidence=self.diff.confidence)
        return out


def compare(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, paired: bool = False,
            confidence: float = 0.95) -> Comparison:
    """``a`` against ``b``: Welch (independent samples) or paired (``paired=True``)."""
    va, vb = _values(a), _values(b)
    if paired:
        diff, p = paired_diff(a, b, confidence), paired_test(a, b)
    else:
        diff, p = welch_diff(va, vb, confidence), welch_test(va, vb)
    verdict = "inconclusive" if diff.contains_zero else ("a > b" if diff.low > 0 else "a < b")
    return Comparison(float(va.mean()) if va.size else _NAN, float(vb.mean()) if vb.size else _NAN,
                      int(va.size), int(vb.size), diff, p, paired, verdict)


def searched_vs_random(searched: Sequence[float] | np.ndarray, random: Sequence[float] | np.ndarray, *,
                       confidence: float = 0.95) -> dict[str, Any]:
    """The summary line of "searched vs random" for one metric (independent samples, Welch).

    Returns:
        ``{"mean_searched", "mean_random", "n_searched", "n_random", "diff", "diff_low",
        "diff_high", "confidence", "p", "verdict", "text"}``; ``verdict`` is
        ``"searched better"``, ``"random better"`` or ``"inconclusive"``, and ``text`` reads
        e.g. ``"searched vs random: mean 0.550 vs 0.490, difference 0.060, 95% CI [0.02, 0.10],
        p = 0.01"``.
    """
    c = compare(searched, random, confidence=confidence)
    verdict = {"a > b": "searched better", "a < b": "random better"}.get(c.verdict, "inconclusive")
    text = (f"searched vs random: mean {c.mean_a:.3f} vs {c.mean_b:.3f}, difference {c.diff.estimate:.3f}, "
            f"{confidence:.0%} CI [{c.diff.low:.3f}, {c.diff.high:.3f}], p = {c.p:.3g} ({verdict}; "
            f"n = {c.n_a} and {c.n_b})")
    return {"mean_searched": c.mean_a, "mean_random": c.mean_b, "n_searched": c.n_a, "n_random": c.n_b,
            "diff": c.diff.estimate, "diff_low": c.diff.low, "diff_high": c.diff.high, "confidence": confidence,
            "p": c.p, "verdict": verdict, "text": text}
