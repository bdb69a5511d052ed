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
from arnas_ray.data import DATASETS
from arnas_ray.errors import SpecError
from arnas_ray.search.config import STRATEGIES, SearchConfig
from arnas_ray.space.layout import LAYOUT_PRESETS, Layout
from arnas_ray.train.config import RetrainConfig

__all__ = [
    "EVAL_ATTACKS",
    "METRICS",
    "DataSpec",
    "DIVERGE_LR",
    "EvalSpec",
    "FaultSpec",
    "GridSpec",
    "OptunaSpec",
    "ResourcesSpec",
    "SelectionSpec",
    "SweepSpec",
    "TrialPoint",
    "load_spec",
]

EVAL_ATTACKS: tuple[str, ...] = ("natural", "fgsm", "pgd20", "pgd100", "aa")
#: objectives the selection may use: search-stage metrics and table columns
METRICS: tuple[str, ...] = ("nat_acc", "pgd_acc", "params", "flops")
SEARCH_ALGORITHMS: tuple[str, ...] = ("grid", "optuna")
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_DATASETS_NEED_ROOT = ("cifar10", "cifar100", "svhn", "tinyimagenet")


@dataclass(frozen=True)
class DataSpec:
    name: str = "digits"
    root: str | None = None
    image_size: int | None = None
    val_fraction: float = 0.1
    limit: int | None = None

    def __post_init__(self) -> None:
        check_choice(self.name, tuple(DATASETS), "name")
        if self.name in _DATASETS_NEED_ROOT:
            if self.root is None:
                raise SpecError("root", f"data set {self.name!r} is read from a local root; set dataset.root")
            if "://" not in self.root and not Path(self.root).exists():
                raise SpecError("root", f"data set root {self.root!r} does not exist")
        if self.image_size is not None:
            check(4 <= self.image_size <= 512, "image_size", "4 <= image_size <= 512", self.image_size)
        check(0.0 < self.val_fraction < 1.0, "val_fraction", "0 < val_fraction < 1", self.val_fraction)
        if self.limit is not None:
            check(self.limit > 0, "limit", "limit > 0", self.limit)

    def load(self, *, augment: bool = True, cutout: int = 0, seed: int = 0):
        from arnas_ray.data import load_dataset

        return load_dataset(self.name, root=self.root, image_size=self.image_size, augment=augment,
                            cutout=cutout, val_fraction=self.val_fraction, seed=seed, limit=self.limit)


@dataclass(frozen=True)
class GridSpec:
    """The grid: every combination of placement x channel_ratios x strategy x seed is a trial.

    ``placement`` items are preset names or explicit layouts ``{placement: [...],
    channel_ratios: [...]}``; ``channel_ratios`` items are lists (or ``null`` = the preset's).
    """

    placement: tuple[Any, ...] = ("arnas",)
    channel_ratios: tuple[tuple[float, ...] | None, ...] = (None,)
    equal_width: bool = False
    strategy: tuple[str, ...] = ("mgda",)
    seed: tuple[int, ...] = (2,)

    def __post_init__(self) -> None:
        for name in ("placement", "channel_ratios", "strategy", "seed"):
            if len(getattr(self, name)) == 0:
                raise SpecError(name, "needs at least one value, got []")
        for i, p in enumerate(self.placement):
            if isinstance(p, str):
                if p not in LAYOUT_PRESETS:
                    raise SpecError(f"placement[{i}]", f"unknown placement {p!r}; valid presets: "
                                                       f"{sorted(LAYOUT_PRESETS)} or an explicit mapping")
            elif isinstance(p, Mapping):
                try:
                    Layout.from_spec(p)
                except SpecError as exc:
                    raise SpecError(f"placement[{i}].{exc.field}", exc.message) from None
            else:
                raise SpecError(f"placement[{i}]", f"expected a preset name or a mapping, got {p!r}")
        for i, s in enumerate(self.strategy):
            check_choice(s, STRATEGIES, f"strategy[{i}]")
        for i, r in enumerate(self.channel_ratios):
            if r is None:
                continue
            if not r:
                raise SpecError(f"channel_ratios[{i}]", "needs one ratio per stage, got []")
            for j, v in enumerate(r):
                check(0 < v <= 64, f"channel_ratios[{i}][{j}]", "0 < ratio <= 64", v)
            for k, p in enumerate(self.placement):  # one ratio per stage of every placement
                try:
                    Layout.from_spec(p, r)
                except SpecError as exc:
                    raise SpecError(f"channel_ratios[{i}]", f"{exc.message} (with placement[{k}] "
                                                            f"{_plain(p)!r})") from None
        if len(set(self.seed)) != len(self.seed):
            raise SpecError("seed", f"repeats a seed: {list(self.seed)}")


@dataclass(frozen=True)
class OptunaSpec:
    """NSGA-II over categorical placements and continuous stage ratios (the first stage is 1)."""

    num_samples: int = 8
    placements: tuple[str, ...] = ("arnas", "robust-first", "all-accurate", "all-robust")
    ratio_low: float = 0.5
    ratio_high: float = 4.0
    population_size: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.num_samples > 0, "num_samples", "num_samples > 0", self.num_samples)
        check(self.population_size >= 2, "population_size", "population_size >= 2", self.population_size)
        check(0 < self.ratio_low < self.ratio_high <= 64, "ratio_low", "0 < ratio_low < ratio_high <= 64",
              (self.ratio_low, self.ratio_high))
        if not self.placements:
            raise SpecError("placements", "needs at least one preset, got []")
        for i, p in enumerate(self.placements):
            check_choice(p, tuple(LAYOUT_PRESETS), f"placements[{i}]")


@dataclass(frozen=True)
class ResourcesSpec:
    """Per trial: CPUs and a (fractional) GPU share; 0.25 packs four search trials per GPU."""

    cpu: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        check(self.cpu > 0, "cpu", "cpu > 0", self.cpu)
        check(0 <= self.gpu <= 1 or float(self.gpu).is_integer(), "gpu",
              "0 <= gpu <= 1 (a fraction) or a whole number of GPUs", self.gpu)
        check(self.gpu >= 0, "gpu", "gpu >= 0", self.gpu)


@dataclass(frozen=True)
class SelectionSpec:
    objectives: dict[str, str] = field(default_factory=lambda: {"nat_acc": "max", "pgd_acc": "max"})
    top_k: int = 3

    def __post_init__(self) -> None:
        if not self.objectives:
            raise SpecError("objectives", "needs at least one objective, got {}")
        for name, direction in self.objectives.items():
            check_choice(name, METRICS, f"objectives.{name}" if name in METRICS else "objectives")
            check_choice(direction, ("max", "min"), f"objectives.{name}")
        check(self.top_k > 0, "top_k", "top_k > 0", self.top_k)


@dataclass(frozen=True)
class EvalSpec:
    attacks: tuple[str, ...] = ("natural", "fgsm", "pgd20", "pgd100")
    aa_subset: int | None = None
    limit: int | None = None
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not self.attacks:
            raise SpecError("attacks", "needs at least one attack, got []")
        for i, a in enumerate(self.attacks):
            check_choice(a, EVAL_ATTACKS, f"attacks[{i}]")
        for name in ("aa_subset", "limit"):
            v = getattr(self, name)
            if v is not None:
                check(v > 0, name, f"{name} > 0", v)
        check(self.batch_size > 0, "batch_size", "batch_size > 0", self.batch_size)


#: the search learning rate of a trial named in ``test_faults.diverge``: large enough that the
#: first weight step sends the weights to ~1e30 and the next loss is non-finite, small enough
#: to stay a finite float32 (so the loop's own divergence check fires, not an overflow error)
DIVERGE_LR = 1e30


@dataclass(frozen=True)
class FaultSpec:
    """Deliberate faults, for tests and drills of the failure path only; never for real sweeps.

    Attributes:
        diverge: trial keys (as ``sweep validate`` prints them) whose search runs with
            ``lr = DIVERGE_LR``, so their loss becomes non-finite in the first epoch and the
            trial ends ``failed`` with the epoch and step in its error.
    """

    diverge: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrialPoint:
    """One search trial of the sweep: its key (stable across resumes) and its overrides."""

    key: str
    placement: Any
    channel_ratios: tuple[float, ...] | None
    strategy: str
    seed: int

    def layout(self) -> Layout:
        return Layout.from_spec(self.placement, self.channel_ratios)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "placement": self.placement, "channel_ratios": self.channel_ratios,
                "strategy": self.strategy, "seed": self.seed}


@dataclass(frozen=True)
class SweepSpec:
    """A whole sweep (see the module docstring for an example).

    ``test_faults`` (:class:`FaultSpec`) exists for tests and failure drills only: it makes
    named trials diverge on purpose (``test_faults: {diverge: [TRIAL_KEY]}``); leave it out
    of real sweeps.
    """

    name: str
    dataset: DataSpec = field(default_factory=DataSpec)
    search: SearchConfig = field(default_factory=SearchConfig)
    grid: GridSpec = field(default_factory=GridSpec)
    search_algorithm: str = "grid"
    optuna: OptunaSpec = field(default_factory=OptunaSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    max_concurrent: int | None = None
    max_failures: int = 1
    selection: SelectionSpec = field(default_factory=SelectionSpec)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    retrain_resources: ResourcesSpec | None = None
    skip_retrain: bool = False
    evaluation: EvalSpec = field(default_factory=EvalSpec)
    storage: str = "runs"
    test_faults: FaultSpec = field(default_factory=FaultSpec)

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= _NAME_OK or self.name.startswith("."):
            raise SpecError("name", f"use letters, digits, '_', '-', '.' (a directory name), got {self.name!r}")
        check_choice(self.search_algorithm, SEARCH_ALGORITHMS, "search_algorithm")
        if self.max_concurrent is not None:
            check(self.max_concurrent > 0, "max_concurrent", "max_concurrent > 0", self.max_concurrent)
        check(self.max_failures >= 0, "max_failures", "max_failures >= 0", self.max_failures)
        if not self.storage:
            raise SpecError("storage", "must be a directory path or URI, got ''")
        # every grid point must build a valid search config (ratios match stage counts ...)
        if self.test_faults.diverge and self.search_algorithm != "grid":
            raise SpecError("test_faults.diverge", "names grid trials; it needs search_algorithm: grid, "
                                                   f"got {self.search_algorithm!r}")
        if self.search_algorithm == "grid":
            keys = [p.key for p in self.points()]
            for i, key in enumerate(self.test_faults.diverge):
                if key not in keys:
                    raise SpecError(f"test_faults.diverge[{i}]", f"unknown trial {key!r}; trials: {keys}")
            for i, point in enumerate(self.points()):
                try:
                    self.search_config(point)
                except SpecError as exc:
                    raise SpecError(f"grid (trial {i}: {point.key}) {exc.field}", exc.message) from None

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any) -> SweepSpec:
        if isinstance(data, Mapping) and isinstance(data.get("grid"), Mapping):
            data = dict(data)
            data["grid"] = _normalize_grid(data["grid"])
        return from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    # ---- expansion ----------------------------------------------------------------------
    def points(self) -> list[TrialPoint]:
        """The expanded grid, in a stable order (placement, ratios, strategy, seed)."""
        out = []
        g = self.grid
        for placement, ratios, strategy, seed in itertools.product(g.placement, g.channel_ratios, g.strategy, g.seed):
            layout = Layout.from_spec(placement, ratios)
            out.append(TrialPoint(_key(layout, strategy, seed), _plain(placement), ratios, strategy, seed))
        keys = [p.key for p in out]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise SpecError("grid", f"two grid points give the same trial {sorted(dup)[0]!r}")
        return out

    def search_config(self, point: TrialPoint) -> SearchConfig:
        layout = point.layout()
        overrides = {
            "placement": layout.placement,
            "channel_ratios": layout.ratios,
            "strategy": point.strategy,
            "seed": point.seed,
            "equal_width": self.grid.equal_width or self.search.equal_width,
        }
        if point.key in self.test_faults.diverge:
            overrides["lr"] = DIVERGE_LR  # deliberate fault (tests): the loss becomes non-finite
        return dataclasses.replace(self.search, **overrides)

    def retrain_config(self, placement: tuple[str, ...], ratios: tuple[float, ...], seed: int) -> RetrainConfig:
        layout = Layout.from_lists(placement, ratios)
        C = self.retrain.channels
        if self.grid.equal_width or self.search.equal_width:
            C = layout.rescaled_C(C, self.search.width_reference)
        return dataclasses.replace(self.retrain, placement=tuple(placement), channel_ratios=tuple(ratios),
                                   channels=C, seed=seed)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _fmt(r: float) -> str:
    return str(int(r)) if float(r).is_integer() else f"{r:g}"


def _key(layout: Layout, strategy: str, seed: int) -> str:
    return f"{layout.name}_{'-'.join(_fmt(r) for r in layout.ratios)}_{strategy}_s{seed}"


def _normalize_grid(grid: Mapping[str, Any]) -> dict[str, Any]:
    """Accept scalars where lists are expected (``seed: 2``) and a single ratio list."""
    out = dict(grid)
    for name in ("placement", "strategy", "seed"):
        if name in out and (isinstance(out[name], (str, int, float)) or isinstance(out[name], Mapping)):
            out[name] = [out[name]]
    cr = out.get("channel_ratios")
    if isinstance(cr, list) and cr and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in cr):
        out["channel_ratios"] = [cr]
    return out


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep YAML (``yaml.safe_load``: no python tags, nothing executed)."""
    p = Path(path)
    if not p.is_file():
        raise SpecError("spec", f"sweep spec {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError("spec", f"{str(p)!r} is not valid YAML (or uses tags, which are refused): {first}") from None
    if not isinstance(data, Mapping):
        raise SpecError("spec", f"{str(p)!r} must hold a mapping of sweep fields, got {type(data).__name__}")
    return SweepSpec.from_dict(data)
