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
                  "--threads", "1", "--order", "first", "--shape", "tiny"], tmp_path)
    (summary,) = [d for d in lines if d.get("bench") == "search_step"]
    assert summary["order"] == "first" and summary["sec_per_step"] > 0 and summary["pair_attacks"] is True
    assert summary["images_per_s"] == pytest.approx(8 / summary["sec_per_step"], rel=1e-2)
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


def test_dw_kernel_benchmark_smoke(tmp_path):
    from arnas_ray.space import _kernels

    lines = _run(["benchmarks/dw_kernel.py", "--quick", "--repeats", "1"], tmp_path)
    assert [(line["C"], line["dilation"]) for line in lines] == [(16, 1), (8, 2)]
    for line in lines:
        assert line["bench"] == "dw_kernel" and line["pytorch_ms"] > 0 and line["kernel"] == _kernels.available()
        if line["kernel"]:  # the two paths compute the same gradient
            assert line["kernel_ms"] > 0 and line["max_rel_diff"] < 1e-5


def test_bn_kernel_benchmark_smoke(tmp_path):
    from arnas_ray.space import _kernels

    lines = _run(["benchmarks/bn_kernel.py", "--quick", "--repeats", "1"], tmp_path)
    assert [(line["C"], line["size"]) for line in lines] == [(16, 8), (8, 5)]
    for line in lines:
        assert line["bench"] == "bn_kernel" and line["pytorch_fwd_ms"] > 0 and line["kernel"] == _kernels.available()
        if line["kernel"]:  # the two compute the same output and gradients
            assert line["kernel_fwd_ms"] > 0 and line["kernel_bwd_ms"] > 0 and line["max_rel_diff"] < 1e-4


def test_pw_kernel_benchmark_smoke(tmp_path):
    from arnas_ray.space import _kernels

    lines = _run(["benchmarks/pw_kernel.py", "--quick", "--repeats", "1"], tmp_path)
    assert [(line["C_in"], line["C_out"], line["groups"]) for line in lines] == [(16, 16, 2), (24, 16, 1)]
    for line in lines:
        assert line["bench"] == "pw_kernel" and line["pytorch_grad_w_ms"] > 0 and line["kernel"] == _kernels.available()
        if line["kernel"]:  # the two compute the same output and gradients
            assert line["kernel_grad_in_ms"] > 0 and line["max_rel_diff"] < 1e-5


def test_op_count_benchmark_smoke(tmp_path):
    args = ["benchmarks/op_count.py", "--shape", "quickstart", "--batch", "16", "--channels", "4", "--cells", "3",
            "--pgd-steps", "1", "--steps", "1"]
    fused, plain = _run([*args, "--impl", "fused", "plain"], tmp_path)
    for line in (fused, plain):
        assert line["bench"] == "op_count" and line["threads"] == 1 and line["order"] == "first"
        assert 0 < line["conv_calls"] < line["aten_calls"] and line["sec_per_step"] > 0
        assert sum(line["top_ops"].values()) <= line["aten_calls"]
        shares = [op["share"] for op in line["top_self_cpu"]]
        assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0001
    assert fused["fused"] and not plain["fused"]
    # the fused supernet exists to make fewer operator calls than the plain MixedOp one
    assert fused["aten_calls"] < plain["aten_calls"] and fused["conv_calls"] < plain["conv_calls"]
    logged = (tmp_path / "results").glob("*.jsonl")
    assert sum(text.count('"op_count"') for text in (f.read_text() for f in logged)) == 2


def test_cells_benchmark_smoke(tmp_path):
    from arnas_ray.space import _fused_cell

    lines = _run(["benchmarks/cells.py", "--shape", "tiny", "--groups", "1", "2", "--repeats", "1", "--calls", "1"],
                 tmp_path)
    assert [(line["groups"], line["cell"]) for line in lines] == [(g, i) for g in (1, 2) for i in range(3)]
    for line in lines:
        assert line["bench"] == "cells" and line["fused_ms"] > 0 and line["per_edge_ms"] > 0
        assert line["faster"] == min(("fused", "per_edge"), key=lambda p: line[f"{p}_ms"])
        limit = _fused_cell.REDUCTION_MAX if line["reduction"] else _fused_cell.CROSS_EDGE_MAX
        assert line["chosen"] == ("fused" if line["state_elements"] <= limit else "per_edge")
    # the stacked pair holds twice the elements of one batch
    assert [d["state_elements"] for d in lines[3:]] == [2 * d["state_elements"] for d in lines[:3]]


def test_cells_benchmark_times_two_paths_that_compute_the_same_gradients():
    import torch

    from arnas_ray.attacks import frozen_parameters
    from arnas_ray.space import Layout, Supernet, _fused_cell
    from benchmarks.cells import cell_inputs, forced, pgd_call

    torch.manual_seed(0)
    net = Supernet(Layout.preset("arnas"), C=4, num_classes=10, cells=3).double().train()  # float64: exact
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    limits = _fused_cell.CROSS_EDGE_MAX, _fused_cell.REDUCTION_MAX
    with frozen_parameters(list(net.parameters())):
        seen = cell_inputs(net, x, 2)
        assert len(seen) == 3 and seen[0][1].shape[1] == 2 * 3 * 4  # two stacked copies of the stem's 12 channels
        for cell, s0, s1, w in seen:
            call = pgd_call(cell, s0, s1, w, 2)
            with forced("fused"):
                assert cell.fusion.pays(s1, 2)
                fused = call()
            with forced("per_edge"):
                assert not cell.fusion.pays(s1, 2)
                per_edge = call()
            assert len(fused) == len(per_edge) > 0
            for a, b in zip(fused, per_edge):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert (_fused_cell.CROSS_EDGE_MAX, _fused_cell.REDUCTION_MAX) == limits
