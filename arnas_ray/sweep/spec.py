"""``SweepSpec``: one YAML file describing a whole sweep, validated before anything starts.

Example (``examples/quickstart.yaml``)::

    name: quickstart
    dataset: {name: digits, image_size: 16}
    search: {channels: 8, cells: 5, epochs: 2, batch_size: 32, order: second}
    grid:
      placement: [arnas, robust-first]
      channel_ratios: [[1, 2, 2], [1, 2, 4]]
      equal_width: true
      strategy: [mgda]
      seed: [2]
    resources: {cpu: 1, gpu: 0}
    selection: {objectives: {nat_acc: max, pgd_acc: max}, top_k: 2}
    retrain: {channels: 8, cells: 5, epochs: 3, batch_size: 64}
    evaluation: {attacks: [natural, fgsm, pgd20, pgd100]}

Every error is a :class:`~arnas_ray.errors.SpecError` whose field is the dotted path in the
file (``grid.channel_ratios[1][0]``), with the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from arnas_ray._config import check, check_choice, from_dict, to_dict
from arnas_ray.errors import SpecError
from arnas_ray.search.config import SearchConfig
from arnas_ray.space.layout import Layout
from arnas_ray.sweep.controls import (
    BaselineSpec,
    BudgetSpec,
    OptunaSpec,
    SamplerSpec,
    SchedulerSpec,
    StopSpec,
    logger_specs,
)
from arnas_ray.sweep.spec_parts import (
    METRICS,
    DataSpec,
    EvalSpec,
    GridSpec,
    ResourcesSpec,
    SelectionSpec,
    TrialPoint,
    plain,
    trial_key,
)
from arnas_ray.train.config import RetrainConfig

__all__ = [
    "DEFINING_FIELDS",
    "METRICS",
    "SEARCH_ALGORITHMS",
    "DataSpec",
    "EvalSpec",
    "GridSpec",
    "ResourcesSpec",
    "SelectionSpec",
    "SweepSpec",
    "TrialPoint",
    "load_spec",
    "spec_from_yaml",
]

SEARCH_ALGORITHMS: tuple[str, ...] = ("grid", "random", "optuna")
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
#: the fields that define the trials of a sweep: a run directory is resumed only by a spec that
#: agrees on all of them (resources, concurrency, failure handling, budget, trackers and storage
#: may change)
DEFINING_FIELDS: tuple[str, ...] = ("name", "dataset", "search", "grid", "search_algorithm", "sampler", "optuna",
                                    "scheduler", "stop", "selection", "retrain", "skip_retrain", "evaluation",
                                    "baselines")
#: fields of the old ``optuna`` section that moved to ``sampler`` (random search uses them too)
_MOVED_TO_SAMPLER = ("num_samples", "seed", "ratio_low", "ratio_high")


@dataclass(frozen=True)
class SweepSpec:
    """A whole sweep (see the module docstring for an example).

    ``max_failed_fraction``: the share of trials of a stage that may fail while ``sweep run``
    still exits 0 (default 0: any failed trial makes it exit 3, after writing the table,
    summary and report). The controls (``sampler``, ``optuna``, ``scheduler``, ``budget``,
    ``stop``, ``loggers``, ``baselines``) are described in :mod:`arnas_ray.sweep.controls`.
    """

    name: str
    dataset: DataSpec = field(default_factory=DataSpec)
    search: SearchConfig = field(default_factory=SearchConfig)
    grid: GridSpec = field(default_factory=GridSpec)
    search_algorithm: str = "grid"
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    optuna: OptunaSpec = field(default_factory=OptunaSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    stop: StopSpec = field(default_factory=StopSpec)
    loggers: tuple[Any, ...] = ()
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    max_concurrent: int | None = None
    max_failures: int = 1
    selection: SelectionSpec = field(default_factory=SelectionSpec)
    baselines: BaselineSpec = field(default_factory=BaselineSpec)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    retrain_resources: ResourcesSpec | None = None
    skip_retrain: bool = False
    evaluation: EvalSpec = field(default_factory=EvalSpec)
    storage: str = "runs"
    max_failed_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= _NAME_OK or self.name.startswith("."):
            raise SpecError("name", f"use letters, digits, '_', '-', '.' (a directory name), got {self.name!r}")
        check_choice(self.search_algorithm, SEARCH_ALGORITHMS, "search_algorithm")
        if self.max_concurrent is not None:
            check(self.max_concurrent > 0, "max_concurrent", "max_concurrent > 0", self.max_concurrent)
        check(self.max_failures >= 0, "max_failures", "max_failures >= 0", self.max_failures)
        check(0.0 <= self.max_failed_fraction <= 1.0, "max_failed_fraction", "0 <= max_failed_fraction <= 1",
              self.max_failed_fraction)
        if not self.storage:
            raise SpecError("storage", "must be a directory path or URI, got ''")
        logger_specs(self.loggers)
        self._check_controls()
        # every point must build a valid search config (ratios match stage counts ...)
        if self.search_algorithm != "optuna":
            for i, point in enumerate(self.points()):
                try:
                    self.search_config(point)
                except SpecError as exc:
                    raise SpecError(f"grid (trial {i}: {point.key}) {exc.field}", exc.message) from None

    def _check_controls(self) -> None:
        if self.budget.trials is not None and self.search_algorithm == "grid":
            raise SpecError("budget.trials", "the grid defines its trials; a trial budget needs "
                                             "search_algorithm: random or optuna")
        if self.stop.epochs is not None and self.stop.epochs >= self.search.epochs:
            raise SpecError("stop.epochs", f"`stop.epochs < search.epochs` must hold (a trial stopped at its "
                                           f"last epoch would miss its final report), but got stop.epochs="
                                           f"{self.stop.epochs}, search.epochs={self.search.epochs}")
        if self.scheduler.kind != "none" and self.scheduler.grace_period > self.search.epochs:
            raise SpecError("scheduler.grace_period", f"`grace_period <= search.epochs` must hold, but got "
                                                      f"grace_period={self.scheduler.grace_period}")
        if self.sampler.points_to_evaluate and self.search_algorithm == "grid":
            raise SpecError("sampler.points_to_evaluate", "needs search_algorithm: random or optuna")

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any) -> SweepSpec:
        if isinstance(data, Mapping):
            data = dict(data)
            if isinstance(data.get("grid"), Mapping):
                data["grid"] = _normalize_grid(data["grid"])
            optuna = data.get("optuna")
            if isinstance(optuna, Mapping):
                for key in _MOVED_TO_SAMPLER:
                    if key in optuna:
                        raise SpecError(f"optuna.{key}", f"moved to sampler.{key} (random search uses it too)")
                if "placements" in optuna:
                    raise SpecError("optuna.placements", "Optuna samples grid.placement (every list of the "
                                                         "grid is a categorical parameter)")
        return from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def defining(self) -> dict[str, Any]:
        """The part of the spec that defines the trials (:data:`DEFINING_FIELDS`)."""
        data = self.to_dict()
        return {k: data[k] for k in DEFINING_FIELDS}

    def fingerprint(self) -> str:
        """A hash of :meth:`defining`: equal for specs that run the same trials."""
        return hashlib.sha256(json.dumps(self.defining(), sort_keys=True).encode()).hexdigest()[:12]

    def defining_diff(self, other: SweepSpec) -> list[str]:
        """Dotted paths of the defining fields where ``other`` differs (``search.epochs``)."""
        return _diff(self.defining(), other.defining(), "")

    def local_warnings(self) -> list[str]:
        """What this machine cannot check but the cluster's nodes must have (data roots)."""
        root = self.dataset.missing_root()
        if root is None:
            return []
        return [f"dataset.root: {root!r} does not exist on this machine; every node that runs a trial "
                "must have it (a trial on a node without it fails, naming the node and the path)"]

    # ---- expansion ----------------------------------------------------------------------
    def num_trials(self) -> int:
        """How many search trials the sweep runs (at most: a budget may end it earlier)."""
        if self.search_algorithm == "grid":
            return len(self.points())
        return self.budget.trials or self.sampler.num_samples

    def normalizations(self) -> tuple[str | None, ...]:
        return self.grid.normalization if self.grid.normalization is not None else (None,)

    def points(self) -> list[TrialPoint]:
        """The search trials: the expanded grid (in a stable order: placement, ratios,
        strategy, seed, normalization) or the random samples. Optuna's are drawn by Tune."""
        if self.search_algorithm == "random":
            from arnas_ray.sweep.sampling import random_points

            return random_points(self)
        if self.search_algorithm == "optuna":
            return []
        out = []
        g = self.grid
        for placement, ratios, strategy, seed, norm in itertools.product(
                g.placement, g.channel_ratios, g.strategy, g.seed, self.normalizations()):
            layout = Layout.from_spec(placement, ratios)
            out.append(TrialPoint(trial_key(layout, strategy, seed, norm), plain(placement), ratios, strategy,
                                  seed, norm))
        keys = [p.key for p in out]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise SpecError("grid", f"two grid points give the same trial {sorted(dup)[0]!r}")
        return out

    def search_config(self, point: TrialPoint) -> SearchConfig:
        layout = point.layout()
        overrides: dict[str, Any] = {
            "placement": layout.placement,
            "channel_ratios": layout.ratios,
            "strategy": point.strategy,
            "seed": point.seed,
            "equal_width": self.grid.equal_width or self.search.equal_width,
        }
        if point.normalization is not None:
            overrides["normalization"] = point.normalization
        return dataclasses.replace(self.search, **overrides)

    def retrain_config(self, placement: tuple[str, ...], ratios: tuple[float, ...], seed: int) -> RetrainConfig:
        layout = Layout.from_lists(placement, ratios)
        C = self.retrain.channels
        if self.grid.equal_width or self.search.equal_width:
            C = layout.rescaled_C(C, self.search.width_reference)
        return dataclasses.replace(self.retrain, placement=tuple(placement), channel_ratios=tuple(ratios),
                                   channels=C, seed=seed)


def _diff(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [path]


def _normalize_grid(grid: Mapping[str, Any]) -> dict[str, Any]:
    """Accept scalars where lists are expected (``seed: 2``) and a single ratio list."""
    out = dict(grid)
    for name in ("placement", "strategy", "seed", "normalization"):
        if name in out and (isinstance(out[name], (str, int, float)) or isinstance(out[name], Mapping)):
            out[name] = [out[name]]
    cr = out.get("channel_ratios")
    if isinstance(cr, list) and cr and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in cr):
        out["channel_ratios"] = [cr]
    return out


def spec_from_yaml(text: str, shown: str) -> SweepSpec:
    """Parse and validate a sweep YAML text (``yaml.safe_load``: no python tags, nothing
    executed); ``shown`` names the file in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError("spec", f"{shown!r} is not valid YAML (or uses tags, which are refused): {first}") from None
    if not isinstance(data, Mapping):
        raise SpecError("spec", f"{shown!r} must hold a mapping of sweep fields, got {type(data).__name__}")
    return SweepSpec.from_dict(data)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep YAML file."""
    p = Path(path)
    if not p.is_file():
        raise SpecError("spec", f"sweep spec {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError("spec", f"cannot read {str(p)!r}: {exc}") from None
    return spec_from_yaml(text, str(p))
