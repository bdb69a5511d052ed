"""Sampled search trials: random search (drawn here, seeded: the same spec gives the same
trials) and Optuna's search space (drawn by Tune's ``OptunaSearch``).

Both sample every list of the grid as a categorical parameter (placement, strategy, seed,
normalization) and the stage ratios after the first (which is 1) uniformly in
``[sampler.ratio_low, sampler.ratio_high]`` (rounded to 3 decimals); ``points_to_evaluate``
come first. Optuna then evaluates every combination of the categorical lists once (at each
layout's own ratios, or the middle of the range when those fall outside it) before NSGA-II
proposes, so no strategy or seed of the grid is left out.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from arnas_ray.space.layout import Layout
from arnas_ray.sweep.spec_parts import TrialPoint, plain, trial_key

__all__ = ["optuna_param_space", "optuna_points_to_evaluate", "point_from_sample", "random_points"]

logger = logging.getLogger(__name__)
_DECIMALS = 3


def _stages(placement: Any) -> int:
    return len(Layout.from_spec(placement).stages)


def _max_stages(spec: Any) -> int:
    return max(_stages(p) for p in spec.grid.placement)


def _sample_dict(spec: Any, p: Mapping[str, Any]) -> dict[str, Any]:
    """A point of ``points_to_evaluate`` completed with the grid's first values."""
    placement = p["placement"]
    ratios = p.get("channel_ratios") or Layout.from_spec(placement).ratios
    return {"placement": placement, "ratios": tuple(float(r) for r in ratios),
            "strategy": p.get("strategy", spec.grid.strategy[0]), "seed": int(p.get("seed", spec.grid.seed[0])),
            "normalization": p.get("normalization", spec.normalizations()[0])}


def point_from_sample(spec: Any, sample: Mapping[str, Any], prefix: str) -> TrialPoint:
    """The trial point of one sample (``placement``, ``ratios``, ``strategy``, ``seed``,
    ``normalization``), keyed ``PREFIX_LAYOUT_RATIOS_STRATEGY_sSEED[_nNORM]``."""
    ratios = tuple(round(float(r), _DECIMALS) for r in sample["ratios"])
    layout = Layout.from_spec(sample["placement"], ratios)
    norm = sample.get("normalization")
    return TrialPoint(trial_key(layout, sample["strategy"], int(sample["seed"]), norm, prefix=prefix),
                      plain(sample["placement"]), ratios, sample["strategy"], int(sample["seed"]), norm)


def random_points(spec: Any) -> list[TrialPoint]:
    """``spec.num_trials()`` random trials (``points_to_evaluate`` first), seeded."""
    rng = np.random.default_rng(spec.sampler.seed)
    g, s = spec.grid, spec.sampler
    samples = [_sample_dict(spec, p) for p in s.points_to_evaluate]
    for _ in range(spec.num_trials() - len(samples)):
        placement = g.placement[int(rng.integers(len(g.placement)))]
        ratios = (1.0, *(float(r) for r in rng.uniform(s.ratio_low, s.ratio_high, _stages(placement) - 1)))
        samples.append({"placement": placement, "ratios": ratios,
                        "strategy": g.strategy[int(rng.integers(len(g.strategy)))],
                        "seed": g.seed[int(rng.integers(len(g.seed)))],
                        "normalization": spec.normalizations()[int(rng.integers(len(spec.normalizations())))]})
    return [point_from_sample(spec, sample, f"r{i:03d}") for i, sample in enumerate(samples)]


def optuna_param_space(spec: Any) -> dict[str, Any]:
    """Tune's search space for Optuna: categorical indices into the grid's lists and one
    continuous ratio per stage after the first."""
    from ray import tune

    g, s = spec.grid, spec.sampler
    space: dict[str, Any] = {
        "placement": tune.choice(list(range(len(g.placement)))),
        "strategy": tune.choice(list(g.strategy)),
        "seed": tune.choice(list(g.seed)),
        **{f"r{i}": tune.uniform(s.ratio_low, s.ratio_high) for i in range(1, _max_stages(spec))},
    }
    if g.normalization is not None:
        space["normalization"] = tune.choice(list(g.normalization))
    return space


def _as_config(spec: Any, sample: Mapping[str, Any]) -> dict[str, Any]:
    idx = next(i for i, p in enumerate(spec.grid.placement) if plain(p) == plain(sample["placement"]))
    ratios = list(sample["ratios"])[1:]
    ratios += [ratios[-1] if ratios else 1.0] * (_max_stages(spec) - 1 - len(ratios))
    low, high = spec.sampler.ratio_low, spec.sampler.ratio_high
    mid = (low + high) / 2
    config = {"placement": idx, "strategy": sample["strategy"], "seed": sample["seed"],
              **{f"r{i + 1}": (r if low <= r <= high else mid) for i, r in enumerate(ratios)}}
    if spec.grid.normalization is not None:
        config["normalization"] = sample["normalization"]
    return config


def optuna_points_to_evaluate(spec: Any) -> list[dict[str, Any]]:
    """The user's points, then one per combination of the categorical lists (as many as the
    trial count allows), as Optuna configs."""
    user = [_sample_dict(spec, p) for p in spec.sampler.points_to_evaluate]
    for p in user:
        if not any(plain(p["placement"]) == plain(q) for q in spec.grid.placement):
            from arnas_ray.errors import SpecError

            raise SpecError("sampler.points_to_evaluate", f"placement {p['placement']!r} is not in grid.placement")
    seen = {(str(plain(p["placement"])), p["strategy"], p["seed"], p["normalization"]) for p in user}
    g = spec.grid
    combos = []
    for placement, strategy, seed, norm in itertools.product(g.placement, g.strategy, g.seed, spec.normalizations()):
        if (str(plain(placement)), strategy, seed, norm) not in seen:
            combos.append({"placement": placement, "ratios": Layout.from_spec(placement).ratios,
                           "strategy": strategy, "seed": seed, "normalization": norm})
    room = spec.num_trials() - len(user)
    if len(combos) > room:
        logger.warning("optuna: %d trials cannot cover the %d combinations of the grid's lists; the first "
                       "%d are evaluated before NSGA-II proposes", spec.num_trials(), len(combos), room)
    return [_as_config(spec, s) for s in (user + combos[:max(room, 0)])]


def optuna_point(spec: Any, config: Mapping[str, Any]) -> TrialPoint:
    """The trial point of an Optuna config (see :func:`optuna_param_space`)."""
    placement = spec.grid.placement[int(config["placement"])]
    n = _stages(placement)
    ratios = (1.0, *(float(config[f"r{i}"]) for i in range(1, n)))
    sample = {"placement": placement, "ratios": ratios, "strategy": config["strategy"], "seed": config["seed"],
              "normalization": config.get("normalization")}
    return point_from_sample(spec, sample, "optuna")
