"""The parts of a sweep spec: data, grid, resources, selection, evaluation, and a trial point."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arnas_ray._config import check, check_choice
from arnas_ray._metrics import (
    ATTACK_COLUMNS,
    DEFAULT_EVAL_ATTACKS,
    EVAL_ATTACKS,
    retrain_objectives,
)
from arnas_ray.data import DATASETS
from arnas_ray.errors import SpecError
from arnas_ray.search.config import NORMALIZATIONS, STRATEGIES
from arnas_ray.space.layout import LAYOUT_PRESETS, Layout

__all__ = ["METRICS", "SELECTION_MODES", "DataSpec", "EvalSpec", "GridSpec", "ResourcesSpec", "SelectionSpec",
           "TrialPoint", "plain", "trial_key"]

#: objectives the selection may use: search-stage metrics and table columns
METRICS: tuple[str, ...] = ("nat_acc", "pgd_acc", "params", "flops")
SELECTION_MODES: tuple[str, ...] = ("front", "all")
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
        if self.name in _DATASETS_NEED_ROOT and self.root is None:
            raise SpecError("root", f"data set {self.name!r} is read from a local root on every node; "
                                    "set dataset.root")
        if self.image_size is not None:
            check(4 <= self.image_size <= 512, "image_size", "4 <= image_size <= 512", self.image_size)
        check(0.0 < self.val_fraction < 1.0, "val_fraction", "0 < val_fraction < 1", self.val_fraction)
        if self.limit is not None:
            check(self.limit > 0, "limit", "limit > 0", self.limit)

    def missing_root(self) -> str | None:
        """The data root when this machine does not have it (it is checked again inside each
        trial, on its node: the submitting machine need not hold the data)."""
        if self.root is None or "://" in self.root or Path(self.root).exists():
            return None
        return self.root

    def load(self, *, augment: bool = True, cutout: int = 0, seed: int = 0):
        from arnas_ray.data import load_dataset

        return load_dataset(self.name, root=self.root, image_size=self.image_size, augment=augment,
                            cutout=cutout, val_fraction=self.val_fraction, seed=seed, limit=self.limit)


@dataclass(frozen=True)
class GridSpec:
    """The grid: every combination of placement x channel_ratios x strategy x seed (x
    normalization, when given) is a trial. Random search and Optuna sample from these lists.

    ``placement`` items are preset names or explicit layouts ``{placement: [...],
    channel_ratios: [...]}``; ``channel_ratios`` items are lists (or ``null`` = the preset's);
    ``normalization`` lists MGDA normalisations (``null``: the search section's one).
    """

    placement: tuple[Any, ...] = ("arnas",)
    channel_ratios: tuple[tuple[float, ...] | None, ...] = (None,)
    equal_width: bool = False
    strategy: tuple[str, ...] = ("mgda",)
    seed: tuple[int, ...] = (2,)
    normalization: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("placement", "channel_ratios", "strategy", "seed"):
            if len(getattr(self, name)) == 0:
                raise SpecError(name, "needs at least one value, got []")
        if self.normalization is not None:
            if not self.normalization:
                raise SpecError("normalization", "needs at least one value, got []")
            for i, n in enumerate(self.normalization):
                check_choice(n, NORMALIZATIONS, f"normalization[{i}]")
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
                                                            f"{plain(p)!r})") from None
        if len(set(self.seed)) != len(self.seed):
            raise SpecError("seed", f"repeats a seed: {list(self.seed)}")


@dataclass(frozen=True)
class ResourcesSpec:
    """Per trial: CPUs and a (fractional) GPU share; 0.25 packs four search trials per GPU."""

    cpu: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        check(self.cpu > 0, "cpu", "cpu > 0", self.cpu)
        # a trial trains one network on one device: more than one GPU would sit idle
        check(0 <= self.gpu <= 1, "gpu", "0 <= gpu <= 1 (one trial uses one device; a fraction packs "
              "several trials per GPU)", self.gpu)


@dataclass(frozen=True)
class SelectionSpec:
    """Which searched networks are retrained.

    ``mode``: ``front`` (the non-dominated rows by ``objectives``, at most ``top_k``) or
    ``all`` (every distinct searched network: ablations compare trained networks, not
    supernets). ``include_stopped``: rows a scheduler stopped early count as well.
    """

    objectives: dict[str, str] = field(default_factory=lambda: {"nat_acc": "max", "pgd_acc": "max"})
    top_k: int = 3
    mode: str = "front"
    include_stopped: bool = False

    def __post_init__(self) -> None:
        check_choice(self.mode, SELECTION_MODES, "mode")
        if not self.objectives:
            raise SpecError("objectives", "needs at least one objective, got {}")
        for name, direction in self.objectives.items():
            check_choice(name, METRICS, f"objectives.{name}" if name in METRICS else "objectives")
            check_choice(direction, ("max", "min"), f"objectives.{name}")
        check(self.top_k > 0, "top_k", "top_k > 0", self.top_k)


@dataclass(frozen=True)
class EvalSpec:
    """The evaluation of every retrained network.

    ``objectives`` rank the retrain stage (columns of the table, ``max``/``min``); by default
    natural accuracy and the accuracy under the strongest evaluated attack."""

    attacks: tuple[str, ...] = DEFAULT_EVAL_ATTACKS
    aa_subset: int | None = None
    limit: int | None = None
    batch_size: int = 256
    objectives: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if not self.attacks:
            raise SpecError("attacks", "needs at least one attack, got []")
        for i, a in enumerate(self.attacks):
            check_choice(a, EVAL_ATTACKS, f"attacks[{i}]")
        measured = tuple(ATTACK_COLUMNS[a] for a in self.attacks) + ("params", "flops")
        if self.objectives is not None:
            if not self.objectives:
                raise SpecError("objectives", "needs at least one objective, got {}")
            for name, direction in self.objectives.items():
                check_choice(name, measured, "objectives" if name not in measured else f"objectives.{name}")
                check_choice(direction, ("max", "min"), f"objectives.{name}")
        elif not retrain_objectives(self.attacks):
            raise SpecError("attacks", f"evaluates nothing to rank the retrained networks on: {list(self.attacks)}")
        for name in ("aa_subset", "limit"):
            v = getattr(self, name)
            if v is not None:
                check(v > 0, name, f"{name} > 0", v)
        check(self.batch_size > 0, "batch_size", "batch_size > 0", self.batch_size)

    def retrain_objectives(self) -> dict[str, str]:
        """What the retrain stage is ranked on."""
        return dict(self.objectives) if self.objectives is not None else retrain_objectives(self.attacks)


@dataclass(frozen=True)
class TrialPoint:
    """One search trial of the sweep: its key (stable across resumes) and its overrides."""

    key: str
    placement: Any
    channel_ratios: tuple[float, ...] | None
    strategy: str
    seed: int
    normalization: str | None = None

    def layout(self) -> Layout:
        return Layout.from_spec(self.placement, self.channel_ratios)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "placement": self.placement, "channel_ratios": self.channel_ratios,
                "strategy": self.strategy, "seed": self.seed, "normalization": self.normalization}

    @classmethod
    def from_dict(cls, p: Mapping[str, Any]) -> TrialPoint:
        ratios = tuple(p["channel_ratios"]) if p.get("channel_ratios") is not None else None
        return cls(p["key"], p["placement"], ratios, p["strategy"], int(p["seed"]), p.get("normalization"))


def plain(value: Any) -> Any:
    """``value`` with mappings as dicts and sequences as lists (YAML- and JSON-ready)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _fmt(r: float) -> str:
    return str(int(r)) if float(r).is_integer() else f"{r:g}"


def trial_key(layout: Layout, strategy: str, seed: int, normalization: str | None = None,
              prefix: str = "") -> str:
    """``[PREFIX_]LAYOUT_R1-R2-R3_STRATEGY_sSEED[_nNORM]``: what tables and Tune call a trial."""
    key = f"{layout.name}_{'-'.join(_fmt(r) for r in layout.ratios)}_{strategy}_s{seed}"
    key = f"{prefix}_{key}" if prefix else key
    return f"{key}_n{normalization}" if normalization is not None else key
