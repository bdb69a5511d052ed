"""Sweep controls of a spec: samplers (random, Optuna), schedulers, budgets, stop criteria,
trackers and baselines. Each is a frozen dataclass validated at construction.

Example (YAML)::

    search_algorithm: optuna
    sampler: {num_samples: 8, seed: 0, ratio_low: 1, ratio_high: 4,
              points_to_evaluate: [{placement: arnas, channel_ratios: [1, 2, 2]}]}
    scheduler: {kind: asha, metric: pgd_acc, mode: max, grace_period: 2, reduction_factor: 3}
    budget: {time_s: 3600}
    stop: {epochs: 20}
    loggers: [tensorboard]
    baselines: {random: 4, genotypes: [ARNAS, DARTS_V2]}
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from arnas_ray._config import check, check_choice
from arnas_ray.errors import SpecError
from arnas_ray.search.config import NORMALIZATIONS, STRATEGIES
from arnas_ray.space.layout import LAYOUT_PRESETS

__all__ = ["LOGGERS", "SCHEDULERS", "BaselineSpec", "BudgetSpec", "LoggerSpec", "OptunaSpec", "SamplerSpec",
           "SchedulerSpec", "StopSpec"]

SCHEDULERS: tuple[str, ...] = ("none", "asha", "median")
#: tracker name -> (Python module it needs, the pip extra that installs it)
LOGGERS: dict[str, tuple[str, str]] = {"tensorboard": ("tensorboardX", "tensorboard"),
                                       "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}
_SCHEDULER_METRICS = ("nat_acc", "pgd_acc")
_POINT_KEYS = ("placement", "channel_ratios", "strategy", "seed", "normalization")


@dataclass(frozen=True)
class SamplerSpec:
    """How ``random`` and ``optuna`` draw trials: ``num_samples`` of them with ``seed``; the
    placements, strategies, seeds and normalisations from the grid's lists (categorical), the
    stage ratios after the first (which is 1) uniformly in ``[ratio_low, ratio_high]``.
    ``points_to_evaluate`` come first (e.g. the paper's ``arnas`` at 1:2:2)."""

    num_samples: int = 8
    seed: int = 0
    ratio_low: float = 0.5
    ratio_high: float = 4.0
    points_to_evaluate: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        check(self.num_samples > 0, "num_samples", "num_samples > 0", self.num_samples)
        check(0 < self.ratio_low < self.ratio_high <= 64, "ratio_low", "0 < ratio_low < ratio_high <= 64",
              (self.ratio_low, self.ratio_high))
        check(len(self.points_to_evaluate) <= self.num_samples, "points_to_evaluate",
              "len(points_to_evaluate) <= num_samples", len(self.points_to_evaluate))
        for i, p in enumerate(self.points_to_evaluate):
            _check_point(p, f"points_to_evaluate[{i}]")


def _check_point(p: Any, path: str) -> None:
    if not isinstance(p, Mapping) or "placement" not in p:
        raise SpecError(path, f"expected a mapping with at least `placement`, got {p!r}")
    unknown = sorted(set(p) - set(_POINT_KEYS))
    if unknown:
        raise SpecError(f"{path}.{unknown[0]}", f"unknown field; valid fields: {list(_POINT_KEYS)}")
    check_choice(p["placement"], tuple(LAYOUT_PRESETS), f"{path}.placement")
    if "strategy" in p:
        check_choice(p["strategy"], STRATEGIES, f"{path}.strategy")
    if "normalization" in p:
        check_choice(p["normalization"], NORMALIZATIONS, f"{path}.normalization")
    ratios = p.get("channel_ratios")
    if ratios is not None and (not isinstance(ratios, (list, tuple)) or not all(
            isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r <= 64 for r in ratios)):
        raise SpecError(f"{path}.channel_ratios", f"expected a list of ratios in (0, 64], got {ratios!r}")


@dataclass(frozen=True)
class OptunaSpec:
    """Optuna's NSGA-II: ``population_size`` trials per generation."""

    population_size: int = 4

    def __post_init__(self) -> None:
        check(self.population_size >= 2, "population_size", "population_size >= 2", self.population_size)


@dataclass(frozen=True)
class SchedulerSpec:
    """A Tune trial scheduler over the search epochs: ``asha`` (asynchronous successive halving)
    or ``median`` (median stopping), on ``metric`` (``nat_acc`` or ``pgd_acc`` of the supernet).
    A trial it stops ends ``stopped`` with the genotype of its last epoch."""

    kind: str = "none"
    metric: str = "pgd_acc"
    mode: str = "max"
    grace_period: int = 2
    reduction_factor: float = 3.0

    def __post_init__(self) -> None:
        check_choice(self.kind, SCHEDULERS, "kind")
        check_choice(self.metric, _SCHEDULER_METRICS, "metric")
        check_choice(self.mode, ("max", "min"), "mode")
        check(self.grace_period >= 1, "grace_period", "grace_period >= 1", self.grace_period)
        check(self.reduction_factor > 1, "reduction_factor", "reduction_factor > 1", self.reduction_factor)


@dataclass(frozen=True)
class BudgetSpec:
    """A budget of the search stage: ``time_s`` seconds (Tune's ``time_budget_s``: running
    trials are stopped, pending ones never start) and, for ``random``/``optuna``, ``trials``
    (Tune's ``num_samples``, in place of ``sampler.num_samples``)."""

    time_s: float | None = None
    trials: int | None = None

    def __post_init__(self) -> None:
        if self.time_s is not None:
            check(self.time_s > 0, "time_s", "time_s > 0", self.time_s)
        if self.trials is not None:
            check(self.trials > 0, "trials", "trials > 0", self.trials)


@dataclass(frozen=True)
class StopSpec:
    """A per-trial stop criterion: a search trial ends ``stopped`` after ``epochs`` epochs."""

    epochs: int | None = None

    def __post_init__(self) -> None:
        if self.epochs is not None:
            check(self.epochs >= 1, "epochs", "epochs >= 1", self.epochs)


@dataclass(frozen=True)
class LoggerSpec:
    """A tracker: Ray Tune's own integration, on only when listed (nothing is sent otherwise).

    ``options`` go to its callback (``tracking_uri``, ``experiment_name`` for MLflow;
    ``project``, ``mode: offline`` for W&B)."""

    kind: str
    options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_choice(self.kind, tuple(LOGGERS), "kind")
        module, extra = LOGGERS[self.kind]
        if importlib.util.find_spec(module) is None:
            raise SpecError("kind", f"logger {self.kind!r} needs the {module} package, which is not "
                                    f"installed: pip install 'arnas-ray[{extra}]'")


@dataclass(frozen=True)
class BaselineSpec:
    """Baselines retrained and evaluated beside the searched networks.

    ``random``: this many random genotypes of the search space (seeded with ``seed``), in the
    layout and widths of the first searched network, matched in parameter count to it within
    ``tolerance`` when ``match_params``; ``genotypes``: named genotypes (``ARNAS``,
    ``DARTS_V2``) or JSON files, in the same layout and widths."""

    random: int = 0
    genotypes: tuple[str, ...] = ()
    match_params: bool = True
    tolerance: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.random >= 0, "random", "random >= 0", self.random)
        check(0 < self.tolerance < 1, "tolerance", "0 < tolerance < 1", self.tolerance)

    def __bool__(self) -> bool:
        return bool(self.random or self.genotypes)


def logger_specs(raw: Any) -> tuple[LoggerSpec, ...]:
    """``loggers`` items: a name, or a mapping ``{kind: NAME, ...options}``."""
    from arnas_ray._config import from_dict

    out = []
    for i, item in enumerate(raw or ()):
        data = {"kind": item} if isinstance(item, str) else dict(item) if isinstance(item, Mapping) else None
        if data is None:
            raise SpecError(f"loggers[{i}]", f"expected a logger name or a mapping, got {item!r}")
        kind = data.pop("kind", None)
        try:
            out.append(from_dict(LoggerSpec, {"kind": kind, "options": data or None}))
        except SpecError as exc:
            raise SpecError(f"loggers[{i}].{exc.field}", exc.message) from None
    return tuple(out)
