"""Smoke runs of the benchmark scripts (tiny settings): they run, print their JSON lines with
the documented fields, and log to ARNAS_BENCH_RESULTS, not into the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], tmp_path: Path, timeout: int = 300) -> list[dict]:
    env = {**os.environ, "ARNAS_BENCH_RESULTS": str(tmp_path / "results"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_search_step_benchmark_smoke(tmp_path):
    lines = _run(["benchmarks/search_step.py", "--no-reference", "--steps", "1", "--rounds", "1",
                  "--threads", "1", "--order", "first"], tmp_path)
    (summary,) = [d for d in lines if d.get("bench") == "search_step"]
    assert summary["order"] == "first" and summary["sec_per_step"] > 0 and summary["pair_attacks"] is True
    assert summary["images_per_s"] == pytest.approx(16 / summary["sec_per_step"], rel=1e-2)
    assert 0 < summary["fraction_of_matmul"] < 1 and summary["achieved_gflops"] > 0
    logged = list((tmp_path / "results").glob("*.jsonl"))
    assert logged and "search_step" in logged[0].read_text()


def test_attacks_and_pareto_benchmarks_smoke(tmp_path):
    (pgd,) = _run(["benchmarks/attacks.py", "--repeats", "1", "--batch-size", "4", "--channels", "4",
                   "--device", "cpu"], tmp_path)
    assert pgd["bench"] == "pgd20" and pgd["ours_img_s"] > 0 and pgd["torchattacks_img_s"] > 0
    assert pgd["ratio"] == pytest.approx(pgd["ours_img_s"] / pgd["torchattacks_img_s"], rel=2e-2)
    (pareto,) = _run(["-m", "benchmarks.pareto_bench", "--sizes", "1000"], tmp_path)
    assert pareto["bench"] == "pareto"
