"""Regression: torch 2.14's CPU backward of a stride-2 1x1 convolution on channels_last input
with 4 or 6 input channels corrupts the heap (glibc aborts: "corrupted double-linked list").
FactorizedReduce (skip_connect at stride 2, the preprocessing after a reduction) must not use
that kernel: widths such as 6 arise from fractional channel ratios (Optuna samples them).
Each case runs in a subprocess, since the failure kills the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CODE = textwrap.dedent("""
    import sys, torch
    from arnas_ray.space.ops import FactorizedReduce
    torch.set_num_threads(1)
    C = int(sys.argv[1])
    op = FactorizedReduce(C, C, affine=False).to(memory_format=torch.channels_last)
    x = torch.rand(16, C, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    for _ in range(5):
        torch.autograd.grad(op(x).sum(), [x, *op.parameters()])
    print("ok")
""")


@pytest.mark.parametrize("channels", [4, 6])
def test_factorized_reduce_backward_in_channels_last_does_not_crash(channels: int) -> None:
    proc = subprocess.run([sys.executable, "-c", CODE, str(channels)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
