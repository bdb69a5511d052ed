"""Sweeps end to end on a real local Ray instance (``ray.init(num_cpus=2)``, shared by the module):
the grid search -> Pareto selection -> retraining pipeline, a diverging trial, and Optuna NSGA-II.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from arnas_ray.cli import main
from arnas_ray.sweep import SweepSpec, load_spec, run_sweep, select_for_retrain
from arnas_ray.sweep.faults import FAULTS_ENV

from ._specs import GRID_KEYS, tiny_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

#: what Tune prints by itself unless the pipeline silences it
TUNE_CHATTER = ("Configuration for experiment", "View detailed results here", "tensorboard",
                "Experiment state snapshotting", "Removed the following hyperparameter values",
                "Wrote the latest version of all result files", "Trial status")


def _dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a >= b) and np.any(a > b))


def _brute_force_ranks(values: np.ndarray) -> list[int]:
    """Non-dominated sorting by repeated O(n^2) peeling (all objectives maximised)."""
    ranks = [-1] * len(values)
    left = set(range(len(values)))
    rank = 0
    while left:
        front = {i for i in left if not any(_dominates(values[j], values[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def _hypervolume_2d(values: np.ndarray) -> float:
    """Area dominated by maximised 2-D points above the origin, by a grid of their coordinates."""
    xs, ys = np.unique(np.r_[0.0, values[:, 0]]), np.unique(np.r_[0.0, values[:, 1]])
    area = 0.0
    for x0, x1 in zip(xs[:-1], xs[1:]):
        for y0, y1 in zip(ys[:-1], ys[1:]):
            if any(p[0] >= x1 and p[1] >= y1 for p in values):
                area += (x1 - x0) * (y1 - y0)
    return area


def _check_ranks(table: pd.DataFrame, stage: str, objectives: dict[str, str]) -> None:
    assert set(objectives.values()) == {"max"}
    part = table[table["stage"] == stage]
    done = part[part["status"] == "finished"]
    values = done[list(objectives)].to_numpy(dtype=float)
    assert list(done["pareto_rank"].astype(int)) == _brute_force_ranks(values)
    assert part.loc[part["status"] != "finished", "pareto_rank"].isna().all()


def test_grid_sweep_end_to_end(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    spec = SweepSpec.from_dict(tiny_spec("e2e", tmp_path / "runs"))
    lines: list[str] = []
    t0 = time.time()
    result = run_sweep(spec, progress=lines.append)
    wall = time.time() - t0
    assert wall < 300, f"the tiny sweep took {wall:.0f} s"

    table = result.table
    run_dir = tmp_path / "runs" / "e2e"
    assert result.run_dir.local_path() == run_dir and result.ok and result.message == ""
    retrain_objectives = spec.evaluation.retrain_objectives()
    assert retrain_objectives == {"nat_acc": "max", "pgd20_acc": "max"}  # the strongest evaluated attack
    assert not table.duplicated(["stage", "trial_id"]).any()
    search = table[table["stage"] == "search"]
    retrain = table[table["stage"] == "retrain"]
    assert sorted(search["trial_id"]) == sorted(GRID_KEYS)
    selected = result.summary["selected"]
    assert 1 <= len(selected) <= spec.selection.top_k
    assert sorted(retrain["trial_id"]) == sorted(f"retrain_{k}" for k in selected)
    assert (table["status"] == "finished").all(), table[["trial_id", "status", "error"]]
    assert table["error"].isna().all()
    for col in ("nat_acc", "pgd_acc"):
        assert search[col].between(0, 1).all()
    for col in ("nat_acc", "fgsm_acc", "pgd20_acc"):
        assert retrain[col].between(0, 1).all()
    assert retrain["pgd100_acc"].isna().all()  # not among the spec's attacks
    assert (search["epochs"] == 1).all() and (retrain["epochs"] == 1).all()
    assert (table["params"] > 0).all() and (table["wall_s"] > 0).all()
    assert set(search["placement"]) == {"arnas", "robust-first"}
    assert set(search["channel_ratios"]) == {"[1, 2, 2]", "[1, 2, 4]"}
    # the selected genotypes come from the search front; the retrain rows carry them
    front = set(search.loc[search["pareto_rank"] == 0, "trial_id"])
    assert set(selected) <= front
    by_key = search.set_index("trial_id")["genotype"]
    for _, row in retrain.iterrows():
        source = row["trial_id"].removeprefix("retrain_")
        assert json.loads(row["genotype"]) == json.loads(by_key[source])

    _check_ranks(table, "search", spec.selection.objectives)
    _check_ranks(table, "retrain", retrain_objectives)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["trials"] == {"search": 4, "retrain": len(selected)}
    assert summary["objectives"] == {"search": spec.selection.objectives, "retrain": retrain_objectives}
    for stage, objectives in (("search", spec.selection.objectives), ("retrain", retrain_objectives)):
        hv = summary["hypervolume"][stage]
        values = table.loc[table["stage"] == stage, list(objectives)].to_numpy(dtype=float)
        assert hv is not None and 0 <= hv <= 1
        assert math.isclose(hv, _hypervolume_2d(values), rel_tol=1e-9, abs_tol=1e-12)
    assert (run_dir / "report.html").stat().st_size > 0 and (run_dir / "pareto.png").exists()
    assert load_spec(run_dir / "spec.yaml") == spec
    assert not (run_dir / "lease.json").exists()

    # progress lines of both stages, and none of Tune's own console output
    assert any(s.startswith("[search]") and "4 done" in s for s in lines)
    assert any(s.startswith("[retrain]") for s in lines)
    assert any(s.startswith("[select]") for s in lines)
    out, err = capfd.readouterr()
    for chatter in TUNE_CHATTER:
        assert chatter not in out + err, chatter
    # trial directories are named after the trial, not after the flattened config
    dirs = sorted(p.name for p in (run_dir / "tune" / "search").iterdir() if p.is_dir())
    assert [d.split("_", 2)[2] for d in dirs] == sorted(GRID_KEYS)

    # the run directory can be inspected from the command line
    assert main(["sweep", "status", str(run_dir)]) == 0
    out, _ = capfd.readouterr()
    assert "driver: not running" in out and "search: 4 finished" in out
    assert f"retrain: {len(selected)} finished" in out and "best natural" in out
    assert main(["pareto", str(run_dir), "--stage", "search"]) == 0
    out, _ = capfd.readouterr()
    assert all(key in out for key in GRID_KEYS) and "front" in out


def test_diverging_trial_fails_and_the_sweep_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = "robust-first_1-2-2_mgda_s2"
    data = tiny_spec("nan", tmp_path / "runs", grid={"placement": ["arnas", "robust-first", "all-robust"],
                                                     "channel_ratios": [[1, 2, 2]]},
                     selection={"top_k": 3})
    spec = SweepSpec.from_dict(data)
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"diverge": [bad]}))
    result = run_sweep(spec, report=False)
    assert not result.ok and result.message == "1 of 3 search trials failed: see sweep status"
    table = result.table
    search = table[table["stage"] == "search"].set_index("trial_id")
    assert sorted(search.index) == sorted(p.key for p in spec.points())
    failed = search.loc[bad]
    assert failed["status"] == "failed"
    err = failed["error"]
    assert "DivergenceError" in err and "non-finite" in err
    assert re.search(r"\bepoch \d+, step \d+\b", err), err  # where it happened
    assert pd.isna(failed["pareto_rank"]) and pd.isna(failed["nat_acc"]) and pd.isna(failed["params"])
    assert json.loads(table.loc[table["trial_id"] == bad, "config"].iloc[0])["lr"] == 1e30
    others = search.drop(index=bad)
    assert (others["status"] == "finished").all() and others["error"].isna().all()
    assert others["pareto_rank"].notna().all()
    # selection ignores the failed row even with room for every trial (top_k = 3)
    assert result.summary["selected"] and bad not in result.summary["selected"]
    retrain = table[table["stage"] == "retrain"]
    assert f"retrain_{bad}" not in set(retrain["trial_id"])
    assert (retrain["status"] == "finished").all()
    assert result.summary["failed"] == 1
    _check_ranks(table, "search", spec.selection.objectives)


def test_optuna_nsga2_sweep(tmp_path: Path) -> None:
    data = tiny_spec("optuna", tmp_path / "runs", search_algorithm="optuna", skip_retrain=True,
                     sampler={"num_samples": 4, "ratio_low": 1.0, "ratio_high": 3.0, "seed": 1},
                     optuna={"population_size": 2},
                     grid={"placement": ["arnas", "robust-first"], "channel_ratios": [None]})
    spec = SweepSpec.from_dict(data)
    result = run_sweep(spec, report=False)
    table = result.table
    assert (table["stage"] == "search").all() and len(table) == 4
    assert table["trial_id"].is_unique and all(t.startswith("optuna_") for t in table["trial_id"])
    assert (table["status"] == "finished").all(), table[["trial_id", "status", "error"]]
    assert set(table["placement"]) <= {"arnas", "robust-first"}
    for text in table["channel_ratios"]:
        r = json.loads(text)
        assert len(r) == 3 and r[0] == 1 and all(1.0 <= v <= 3.0 for v in r[1:])
    assert table[["nat_acc", "pgd_acc"]].stack().between(0, 1).all()
    _check_ranks(table, "search", spec.selection.objectives)
    assert result.summary["hypervolume"]["search"] is not None
    assert result.summary["hypervolume"]["retrain"] is None and result.summary["selected"] == []


def test_retrain_all_with_baselines_and_diagnostics(tmp_path: Path) -> None:
    """Every distinct searched network is retrained once (mode all), beside random genotypes of
    the same layout and size and a named one; the table carries the search diagnostics and
    the summary compares searched with random."""
    data = tiny_spec("baselines", tmp_path / "runs", grid={"placement": ["arnas"], "channel_ratios": [[1, 2, 2]],
                                                            "seed": [1, 2]},
                     selection={"mode": "all"}, baselines={"random": 2, "genotypes": ["ARNAS"]},
                     search={"strategy": "mgda"})
    spec = SweepSpec.from_dict(data)
    result = run_sweep(spec)
    assert result.ok, result.message
    table = result.table
    search, retrain = table[table["stage"] == "search"], table[table["stage"] == "retrain"]
    assert search["gamma_mean"].between(0, 1).all() and search["entropy_mean"].gt(0).all()
    assert search["genotype_changes"].notna().all() and search["normalization"].eq("none").all()
    assert (search["degeneracy"].notna()).all()  # "" or the warning, never missing
    sources = retrain["source"].value_counts().to_dict()
    distinct = len({p["genotype"] for p in select_for_retrain(spec, table)})
    assert sources == {"searched": distinct, "random": 2, "named": 1}, sources
    assert (retrain["status"] == "finished").all()
    random = retrain[retrain["source"] == "random"]
    assert set(random["placement"]) == {"arnas"} and not set(random["genotype"]) & set(search["genotype"])
    compared = result.summary["searched_vs_random"]
    assert set(compared) == {"nat_acc", "pgd20_acc"} and compared["pgd20_acc"]["n_random"] == 2
    assert (result.run_dir.local_path() / "search_diagnostics.png").exists()
