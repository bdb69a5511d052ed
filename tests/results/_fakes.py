"""Tiny fake rows and run directories shared by the results tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from arnas_ray.results.rundir import TABLE as RESULTS_FILE
from arnas_ray.results.table import normalize_rows, write_table

ARNAS_GENOTYPE: dict[str, Any] = {
    "cells": {
        "accurate": {
            "edges": [["skip_connect", 0], ["skip_connect", 1], ["sep_conv_5x5", 0],
                      ["sep_conv_3x3", 1], ["sep_conv_5x5", 3], ["sep_conv_3x3", 1],
                      ["sep_conv_5x5", 4], ["skip_connect", 0]],
            "concat": [2, 3, 4, 5],
        },
        "reduce": {
            "edges": [["avg_pool_3x3", 1], ["avg_pool_3x3", 0], ["dil_conv_5x5", 2],
                      ["avg_pool_3x3", 0], ["dil_conv_5x5", 3], ["dil_conv_5x5", 2],
                      ["dil_conv_5x5", 4], ["dil_conv_5x5", 3]],
            "concat": [2, 3, 4, 5],
        },
        "robust": {
            "edges": [["dil_conv_5x5", 0], ["dil_conv_5x5", 1], ["dil_conv_5x5", 1],
                      ["dil_conv_5x5", 2], ["dil_conv_3x3", 3], ["dil_conv_5x5", 2],
                      ["dil_conv_3x3", 4], ["dil_conv_3x3", 3]],
            "concat": [2, 3, 4, 5],
        },
    }
}

SMALL_GENOTYPE: dict[str, Any] = {
    "cells": {
        "accurate": {"edges": [["sep_conv_3x3", 0], ["skip_connect", 1]], "concat": [2]},
        "robust": {"edges": [["dil_conv_3x3", 1], ["max_pool_3x3", 0]], "concat": [2]},
    }
}


def row(stage: str, trial_id: str, status: str = "finished", **values: Any) -> dict[str, Any]:
    """One results row with the required columns filled in."""
    base: dict[str, Any] = {"sweep_id": "sw-test", "stage": stage, "trial_id": trial_id,
                            "status": status}
    base.update(values)
    return base


def fake_rows() -> list[dict[str, Any]]:
    """Search and retrain rows of a tiny sweep, with a failed and a pending trial."""
    common = {"dataset": "digits", "strategy": "mgda", "order": "first", "epochs": 2,
              "device": "cpu", "node": "node-1", "started_at": "2024-05-01T10:00:00Z",
              "finished_at": "2024-05-01T10:01:00Z"}
    return [
        row("search", "s0", placement="arnas", channel_ratios=[1, 2, 2], seed=0,
            genotype=ARNAS_GENOTYPE, params=120_000, flops=9_000_000, nat_acc=0.82,
            pgd_acc=0.41, wall_s=61.5, **common),
        row("search", "s1", placement="all-robust", channel_ratios=[1, 1, 1], seed=0,
            genotype=SMALL_GENOTYPE, params=90_000, flops=7_000_000, nat_acc=0.78,
            pgd_acc=0.47, wall_s=58.0, **common),
        row("search", "s2", placement="all-accurate", channel_ratios=[1, 2, 2], seed=1,
            genotype=SMALL_GENOTYPE, params=100_000, flops=8_000_000, nat_acc=0.70,
            pgd_acc=0.30, wall_s=55.0, **common),
        row("search", "s3<script>", status="failed", error="DivergenceError: loss is nan <&>",
            placement="alternate", channel_ratios=[1, 2, 2], seed=1, wall_s=3.0,
            device="cuda:0", node="node-2"),
        row("retrain", "r0", placement="arnas", channel_ratios=[1, 2, 2], seed=0,
            genotype=ARNAS_GENOTYPE, params=1_533_718, flops=424_000_000, nat_acc=0.86,
            fgsm_acc=0.55, pgd20_acc=0.50, pgd100_acc=0.49, aa_acc=0.45, wall_s=600.0,
            **common),
        row("retrain", "r1", placement="all-robust", channel_ratios=[1, 1, 1], seed=0,
            genotype=SMALL_GENOTYPE, params=800_000, flops=200_000_000, nat_acc=0.80,
            fgsm_acc=0.58, pgd20_acc=0.53, pgd100_acc=0.52, aa_acc=0.48, wall_s=500.0,
            **common),
        row("retrain", "r2", status="pending", placement="all-accurate",
            channel_ratios=[1, 2, 2], seed=1),
    ]


SPEC_TEXT = """# tiny sweep <for tests> & more
name: sw-test
dataset: digits
grid:
  placement: [arnas, all-robust, all-accurate, alternate]
  channel_ratios: [[1, 2, 2], [1, 1, 1]]
"""


def make_run(root: Path, rows: list[dict[str, Any]] | None = None,
             summary: dict[str, Any] | None = None) -> Path:
    """Write spec.yaml, results.parquet and (optionally) summary.json into ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "spec.yaml").write_text(SPEC_TEXT, encoding="utf-8")
    write_table(normalize_rows(fake_rows() if rows is None else rows), root / RESULTS_FILE)
    if summary is not None:
        (root / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return root
