"""Baselines of a sweep (no Ray): random genotypes in the searched layouts and widths, matched in
parameter count, seeded; named genotypes where their cells fit; the searched-vs-random summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from arnas_ray.errors import SpecError
from arnas_ray.results.table import normalize_rows
from arnas_ray.search.baselines import genotype_params
from arnas_ray.space import GENOTYPES, Genotype, Layout
from arnas_ray.sweep import SweepSpec, select_for_retrain
from arnas_ray.sweep.baselines import baseline_points, searched_vs_random_summary

from ._specs import tiny_spec

GRID = {"placement": ["arnas"], "channel_ratios": [[1, 2, 2], [1, 2, 4]], "equal_width": True}


def _table(spec: SweepSpec):
    rows = []
    for i, point in enumerate(spec.points()):
        config = {**spec.search_config(point).to_dict(), "num_classes": 10, "in_channels": 1}
        rows.append({"sweep_id": spec.name, "stage": "search", "trial_id": point.key, "status": "finished",
                     "placement": point.layout().name, "channel_ratios": list(point.layout().ratios),
                     "strategy": point.strategy, "seed": point.seed, "genotype": GENOTYPES["ARNAS"].to_json(),
                     "nat_acc": 0.5 + 0.1 * i, "pgd_acc": 0.3 - 0.1 * i, "params": 1000, "config": config})
    return normalize_rows(rows)


def test_random_baselines_match_the_searched_networks_layout_width_and_size(tmp_path: Path) -> None:
    spec = SweepSpec.from_dict(tiny_spec("bl", tmp_path, grid=GRID, selection={"mode": "all"},
                                         baselines={"random": 3, "genotypes": ["ARNAS", "DARTS_V2"], "seed": 7}))
    table = _table(spec)
    searched = select_for_retrain(spec, table)
    assert len(searched) == 2 and {p["kind"] for p in searched} == {"searched"}
    points = baseline_points(spec, table, searched)
    assert points == baseline_points(spec, table, searched)  # seeded: the same baselines again
    by_layout: dict[str, list[dict]] = {}
    for p in points:
        by_layout.setdefault(json.dumps(p["channel_ratios"]), []).append(p)
    assert len(by_layout) == 2  # both searched layouts get their own baselines
    for ref in searched:
        group = by_layout[json.dumps(ref["channel_ratios"])]
        kinds = [p["kind"] for p in group]
        assert kinds.count("random") == 3 and kinds.count("named") == 1  # DARTS_V2 has no accurate cells
        rcfg = spec.retrain_config(tuple(ref["placement"]), tuple(ref["channel_ratios"]), ref["seed"])
        layout = Layout.from_lists(tuple(ref["placement"]), tuple(ref["channel_ratios"]))
        target = genotype_params(Genotype.from_json(ref["genotype"]), layout, rcfg.channels, 10, rcfg.cells,
                                 in_channels=1)
        for p in group:
            assert p["placement"] == ref["placement"] and p["layout_name"] == ref["layout_name"]
            g = Genotype.from_json(p["genotype"])
            assert set(g.cell_types) == set(layout.cell_types)
            if p["kind"] == "random":
                params = genotype_params(g, layout, rcfg.channels, 10, rcfg.cells, in_channels=1)
                assert abs(params / target - 1) <= 0.1, (params, target)
        randoms = {p["genotype"] for p in group if p["kind"] == "random"}
        assert len(randoms) == 3 and GENOTYPES["ARNAS"].to_json() not in randoms
    assert len({p["key"] for p in points}) == len(points)


def test_impossible_match_is_a_clear_error(tmp_path: Path) -> None:
    """A searched network of parameter-free ops only: within 1% of its size lie almost no random
    genotypes (each of 24 edges would have to draw a pool or a skip), so the draws give up."""
    spec = SweepSpec.from_dict(tiny_spec("bl", tmp_path, grid=GRID, baselines={"random": 1, "tolerance": 0.01}))
    table = _table(spec)
    searched = [{**select_for_retrain(spec, table)[0], "genotype": _all_pools()}]
    with pytest.raises(SpecError, match=r"^baselines.random: found 0 of 1 random genotypes"):
        baseline_points(spec, table, searched)


def _all_pools() -> str:
    """A genotype of only parameter-free ops: no random genotype of the space is as small (within 1%)."""
    cell = {"edges": [["max_pool_3x3", 0], ["max_pool_3x3", 1]] * 4, "concat": [2, 3, 4, 5]}
    return json.dumps({"cells": {t: cell for t in ("accurate", "reduce", "robust")}})


def test_searched_vs_random_summary() -> None:
    rng = np.random.default_rng(0)
    rows = [{"sweep_id": "s", "stage": "retrain", "trial_id": f"{src}{i}", "status": "finished", "source": src,
             "pgd20_acc": float(v)}
            for src, mean in (("searched", 0.55), ("random", 0.45))
            for i, v in enumerate(rng.normal(mean, 0.01, 5))]
    out = searched_vs_random_summary(normalize_rows(rows), {"pgd20_acc": "max"})
    s = out["pgd20_acc"]
    assert s["verdict"] == "searched better" and s["n_searched"] == s["n_random"] == 5
    assert s["diff_low"] > 0 and s["text"].startswith("searched vs random: mean 0.5")
    assert searched_vs_random_summary(normalize_rows(rows[:5]), {"pgd20_acc": "max"}) == {}
