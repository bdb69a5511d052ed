"""Time the depthwise weight gradient: the compiled kernel against the PyTorch path it replaces.

For every shape the fused cells of the benchmark's small search shape back-propagate through
(batch 16, channels_last float32), the weight gradient of ``depthwise_conv2d``'s backward is
computed by the compiled kernel (:mod:`arnas_ray.space._kernels`) and by the path used
without it: oneDNN's ``convolution_backward`` for undilated kernels, the grouped-convolution
correlation of :mod:`arnas_ray.space._dwconv` for dilated ones. Best of ``--repeats``, in one
process, one thread unless told.

Usage::

    python -m benchmarks.dw_kernel [--threads 1] [--repeats 5] [--quick]

Prints one JSON line per shape: ``kernel_ms``, ``pytorch_ms``, ``speedup`` and the largest
relative difference of the two results (``max_rel_diff``); ``kernel: false`` where the kernel
cannot be built here (then only the PyTorch path is timed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from arnas_ray.space import _dwconv, _kernels  # noqa: E402
from benchmarks._common import best_ms, emit, kernel_args, rel_diff  # noqa: E402

# (N, C, size, kernel, stride, dilation): the fused cells' 5x5 depthwise convs at the small shape
SHAPES = [(16, 16, 32, 5, 1, 1), (16, 192, 32, 5, 1, 1), (16, 384, 32, 5, 2, 1), (16, 768, 16, 5, 1, 1),
          (16, 16, 32, 5, 1, 2), (16, 192, 32, 5, 1, 2), (16, 768, 16, 5, 1, 2)]
QUICK = [(2, 16, 8, 5, 1, 1), (2, 8, 8, 5, 1, 2)]


def _pytorch(go: torch.Tensor, x: torch.Tensor, w: torch.Tensor, s: int, p: int, d: int) -> torch.Tensor:
    if d != 1:
        return _dwconv._grad_weight(go, x, w.shape[-1], s, p, d)
    out: torch.Tensor = torch.ops.aten.convolution_backward(go, x, w, None, [s] * 2, [p] * 2, [d] * 2, False, [0, 0],
                                                            x.shape[1], [False, True, False])[1]
    return out


def main(argv: list[str] | None = None) -> int:
    args = kernel_args(__doc__.splitlines()[0], 5, argv)
    have = _kernels.available()
    g = torch.Generator().manual_seed(0)
    for N, C, size, k, s, d in QUICK if args.quick else SHAPES:
        p = d * (k // 2)
        x = torch.randn(N, C, size, size, generator=g).contiguous(memory_format=torch.channels_last)
        w = torch.randn(C, 1, k, k, generator=g)
        go = torch.randn(F.conv2d(x, w, None, s, p, d, C).shape, generator=g).contiguous(
            memory_format=torch.channels_last)
        torch_ms = best_ms(_pytorch, (go, x, w, s, p, d), args.repeats)
        rec: dict[str, object] = {"bench": "dw_kernel", "N": N, "C": C, "size": size, "k": k, "stride": s,
                                  "dilation": d, "threads": args.threads, "kernel": have,
                                  "pytorch_ms": round(torch_ms, 3)}
        if have:
            ours = _kernels.grad_weight(go, x, k, s, p, d)
            assert ours is not None
            ref = _pytorch(go, x, w, s, p, d)
            kernel_ms = best_ms(_kernels.grad_weight, (go, x, k, s, p, d), args.repeats)
            rec.update(kernel_ms=round(kernel_ms, 3), speedup=round(torch_ms / max(kernel_ms, 1e-9), 2),
                       max_rel_diff=rel_diff(ours, ref))
        emit(rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
