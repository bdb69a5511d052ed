"""Baselines retrained beside the searched networks (``baselines:`` in the spec).

For every layout (placement and channel ratios) among the searched networks being retrained:

* ``random: N`` random genotypes of the search space (:mod:`arnas_ray.search.baselines`: the
  search's op set, the DARTS cell rules, seeded), in that layout and at the retrain widths,
  by default matched in parameter count to the searched networks of that layout (their median,
  within ``tolerance``): robustness grows with size, so an unmatched comparison would measure
  size, not search;
* ``genotypes: [ARNAS, DARTS_V2, FILE.json]``: named genotypes in that layout, where their cell
  types are the layout's (``DARTS_V2`` has ``normal`` cells: it fits the ``darts`` layout).

They go straight to retraining and the same evaluation; their rows say ``source: random`` or
``source: named`` (searched networks: ``searched``). The summary compares searched with random
on each retrain objective (:func:`arnas_ray.results.stats.searched_vs_random`).
"""

from __future__ import annotations

import json
import logging
import statistics
from typing import Any

import pandas as pd

from arnas_ray.errors import SpecError
from arnas_ray.search.baselines import genotype_params, matched_random_genotypes, random_genotypes
from arnas_ray.space import Genotype, Layout
from arnas_ray.sweep.spec import SweepSpec

__all__ = ["baseline_points", "searched_vs_random_summary"]

logger = logging.getLogger(__name__)


def _data_shape(table: pd.DataFrame) -> tuple[int, int]:
    """``(num_classes, in_channels)`` the search trials reported (the driver need not hold the data)."""
    for text in table.loc[table["stage"] == "search", "config"].dropna():
        cfg = json.loads(text)
        if cfg.get("num_classes") and cfg.get("in_channels"):
            return int(cfg["num_classes"]), int(cfg["in_channels"])
    raise SpecError("baselines", "no finished search trial reported its data set's shape; baselines need one")


def _layout_key(point: dict[str, Any]) -> str:
    ratios = "-".join(f"{r:g}" for r in point["channel_ratios"])
    return f"{point['layout_name']}_{ratios}"


def _point(kind: str, key: str, genotype: Genotype, ref: dict[str, Any], seed: int) -> dict[str, Any]:
    return {"key": key, "source": key, "genotype": genotype.to_json(), "placement": list(ref["placement"]),
            "layout_name": ref["layout_name"], "channel_ratios": list(ref["channel_ratios"]), "strategy": None,
            "seed": seed, "kind": kind}


def _random_for_layout(spec: SweepSpec, group: list[dict[str, Any]], shape: tuple[int, int],
                       offset: int) -> list[dict[str, Any]]:
    b, ref = spec.baselines, group[0]
    rcfg = spec.retrain_config(tuple(ref["placement"]), tuple(ref["channel_ratios"]), int(ref["seed"]))
    layout = Layout.from_lists(tuple(ref["placement"]), tuple(ref["channel_ratios"]))
    primitives = spec.search.primitive_names()
    if b.match_params:
        target = int(statistics.median(
            genotype_params(Genotype.from_json(p["genotype"]), layout, rcfg.channels, shape[0], rcfg.cells,
                            in_channels=shape[1]) for p in group))
        try:
            genotypes = matched_random_genotypes(b.random, target, layout=layout, C=rcfg.channels,
                                                 num_classes=shape[0], cells=rcfg.cells, seed=b.seed + offset,
                                                 primitives=primitives, in_channels=shape[1],
                                                 tolerance=b.tolerance)
        except ValueError as exc:
            raise SpecError("baselines.random", str(exc)) from None
    else:
        genotypes = random_genotypes(b.random, layout.cell_types, primitives, seed=b.seed + offset)
    return [_point("random", f"random{i}_{_layout_key(ref)}", g, ref, int(ref["seed"]))
            for i, g in enumerate(genotypes)]


def _named_for_layout(spec: SweepSpec, ref: dict[str, Any]) -> list[dict[str, Any]]:
    types = set(ref["placement"]) | {"reduce"}
    out = []
    for name in spec.baselines.genotypes:
        try:
            genotype = Genotype.resolve(name)
        except (ValueError, KeyError, OSError) as exc:
            raise SpecError("baselines.genotypes", str(exc)) from None
        if not types <= set(genotype.cell_types):
            logger.warning("baseline %s has cells %s, not the layout %s's %s: not retrained there", name,
                           sorted(genotype.cell_types), ref["layout_name"], sorted(types))
            continue
        stem = name.rsplit("/", 1)[-1].removesuffix(".json")
        out.append(_point("named", f"named_{stem}_{_layout_key(ref)}", genotype, ref, int(ref["seed"])))
    return out


def baseline_points(spec: SweepSpec, table: pd.DataFrame, searched: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Retrain points of the baselines, for every layout of the ``searched`` retrain points."""
    if not spec.baselines or not searched:
        return []
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in searched:
        groups.setdefault(_layout_key(p), []).append(p)
    shape = _data_shape(table) if spec.baselines.random else (0, 0)
    out: list[dict[str, Any]] = []
    for i, group in enumerate(groups.values()):
        if spec.baselines.random:
            out += _random_for_layout(spec, group, shape, 1000 * i)
        out += _named_for_layout(spec, group[0])
    return out


def searched_vs_random_summary(table: pd.DataFrame, objectives: dict[str, str]) -> dict[str, Any]:
    """Per retrain objective: searched vs random (means, 95% CI of the difference, p, verdict)."""
    from arnas_ray.results.stats import searched_vs_random

    rows = table[(table["stage"] == "retrain") & (table["status"] == "finished")]
    searched, random = rows[rows["source"] == "searched"], rows[rows["source"] == "random"]
    if searched.empty or random.empty:
        return {}
    return {metric: searched_vs_random(searched[metric].dropna().to_numpy(float),
                                       random[metric].dropna().to_numpy(float))
            for metric in objectives if metric in rows.columns}
