"""benchmarks/hypergrad.py and benchmarks/diagnostics_overhead.py. hypergrad: the exact line is exact (float64, in-process, on a search
checkpoint's state), a fine finite-difference radius agrees with it, first order does not; the
script prints its documented JSON lines (fresh state after a warm-up step, memory measured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arnas_ray.attacks import AttackSpec
from arnas_ray.data import load_dataset
from arnas_ray.search import SearchConfig, run_search
from benchmarks.hypergrad import build_state, measure, quality

ROOT = Path(__file__).resolve().parents[1]


def _config() -> SearchConfig:
    return SearchConfig(channels=4, cells=3, epochs=1, batch_size=8, steps_per_epoch=1, eval_samples=8,
                        eval_attack_steps=1, order="first", seed=1, channels_last=False,
                        attack=AttackSpec(kind="pgd", eps=0.15, alpha=0.0375, steps=2))


def test_exact_line_is_exact_on_a_checkpoint_state_in_float64(tmp_path):
    config = _config()
    data = load_dataset("digits", image_size=8, seed=config.seed, augment=False)
    result = run_search(config, data, "cpu", checkpoint_dir=tmp_path)
    parts, batch = build_state(config=SearchConfig(channels=6, cells=4), dataset="digits", size=8,
                               checkpoint=tmp_path / "search.pt", dtype=torch.float64)
    assert parts.config == config  # the checkpoint's config, not the one passed
    assert {k: v.tolist() for k, v in parts.model.arch_parameters().items()} == result.alphas
    assert batch.x_val.dtype == torch.float64 and not torch.equal(batch.x_val_adv, batch.x_val)
    lines = {r["order"]: r for r in measure(parts, batch, fd_radius=1e-6)}
    for obj in ("nat", "adv"):
        assert lines["exact"][f"cos_{obj}"] == pytest.approx(1.0, abs=1e-6)
        assert lines["exact"][f"rel_err_{obj}"] < 1e-6
        assert lines["second"][f"cos_{obj}"] == pytest.approx(1.0, abs=1e-6)  # below the ReLU kinks
        assert lines["first"][f"cos_{obj}"] < 0.999  # the implicit term matters
        assert lines["first"][f"rel_err_{obj}"] > 1e-2
    assert lines["second"]["fd_radius"] == 1e-6 and lines["first"]["fd_radius"] is None
    assert all(r["sec"] > 0 for r in lines.values())


def test_quality_is_cosine_and_relative_error():
    a, b = [torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])]
    cos, rel = quality(a, b)
    assert cos == pytest.approx(2 ** -0.5) and rel == pytest.approx(2 ** -0.5)


@pytest.mark.slow
def test_script_prints_one_line_per_order_with_memory(tmp_path):
    env = {**os.environ, "ARNAS_BENCH_RESULTS": str(tmp_path / "results"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "benchmarks/hypergrad.py", "--C", "4", "--cells", "3", "--size", "8",
                           "--batch", "8", "--attack-steps", "1", "--warm-steps", "1", "--orders", "first",
                           "exact", "--threads", "1"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert [r["order"] for r in lines] == ["first", "exact"]
    for r in lines:
        assert r["bench"] == "hypergrad" and r["warm_steps"] == 1 and r["C"] == 4 and r["size"] == 8
        assert r["mem_method"] == "rss_poll" and r["peak_mem_mb"] >= 0 and r["sec"] > 0
    assert lines[1]["cos_nat"] == pytest.approx(1.0, abs=1e-5) and -1 <= lines[0]["cos_adv"] <= 1
    assert list((tmp_path / "results").glob("*.jsonl"))


@pytest.mark.slow
def test_diagnostics_overhead_benchmark_interleaves_both_searches(capsys, tmp_path, monkeypatch):
    import benchmarks._common
    from benchmarks.diagnostics_overhead import main

    monkeypatch.setattr(benchmarks._common, "RESULTS", tmp_path)  # emit() logs there, not in the checkout

    assert main(["--C", "4", "--cells", "3", "--size", "8", "--batch", "4", "--order", "first", "--steps", "1",
                 "--rounds", "2", "--threads", "1"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    rounds, (summary,) = lines[:2], lines[2:]
    assert [r["round"] for r in rounds] == [0, 1]
    assert summary["bench"] == "diagnostics_overhead" and len(summary["overhead_per_round"]) == 2
    assert summary["sec_per_step_on"] > 0 and summary["sec_per_step_off"] > 0 and summary["diag_sec"] > 0
    assert summary["overhead"] == pytest.approx(summary["sec_per_step_on"] / summary["sec_per_step_off"] - 1,
                                                abs=1e-3)
    assert list(tmp_path.glob("*.jsonl"))
