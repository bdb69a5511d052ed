"""Which search rows get retrained: one per distinct network (no Ray needed)."""

from __future__ import annotations

import json
from pathlib import Path

from arnas_ray.results.table import normalize_rows
from arnas_ray.space import GENOTYPES
from arnas_ray.sweep import SweepSpec
from arnas_ray.sweep import select_for_retrain as _select

from ._specs import tiny_spec

ARNAS = json.loads(GENOTYPES["ARNAS"].to_json())["cells"]
DARTS = json.loads(GENOTYPES["DARTS_V2"].to_json())["cells"]


def _row(trial: str, placement: str, ratios: list[int], cells: dict, nat: float, pgd: float) -> dict:
    return {"sweep_id": "s", "stage": "search", "trial_id": trial, "status": "finished", "dataset": "digits",
            "placement": placement, "channel_ratios": json.dumps(ratios), "strategy": "mgda", "order": "first",
            "seed": 2, "genotype": json.dumps({"cells": cells}), "nat_acc": nat, "pgd_acc": pgd,
            "config": json.dumps({})}


def test_twins_under_swapped_cell_names_are_retrained_once(tmp_path: Path) -> None:
    spec = SweepSpec.from_dict(tiny_spec("sel", tmp_path, selection={"top_k": 2}))
    # robust-first (robust, robust, accurate) with the two names swapped is the arnas network
    swapped = {"accurate": ARNAS["robust"], "robust": ARNAS["accurate"], "reduce": ARNAS["reduce"]}
    other = {"accurate": DARTS["normal"], "robust": DARTS["normal"], "reduce": DARTS["reduce"]}
    table = normalize_rows([
        _row("arnas_1-2-2", "arnas", [1, 2, 2], ARNAS, 0.50, 0.20),
        _row("robust-first_1-2-2", "robust-first", [1, 2, 2], swapped, 0.50, 0.20),
        _row("arnas_1-2-4", "arnas", [1, 2, 4], other, 0.40, 0.30),
    ])
    points = _select(spec, table)
    assert sorted(p["source"] for p in points) == ["arnas_1-2-2", "arnas_1-2-4"]
    # the same cells under the same names at different ratios are different networks
    table2 = normalize_rows([
        _row("arnas_1-2-2", "arnas", [1, 2, 2], ARNAS, 0.50, 0.20),
        _row("arnas_1-2-4", "arnas", [1, 2, 4], ARNAS, 0.50, 0.20),
    ])
    assert len(_select(spec, table2)) == 2
