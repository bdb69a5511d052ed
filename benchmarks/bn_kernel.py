"""Time training-mode batch norm: the compiled kernels against PyTorch's native kernels.

For the channels_last shapes the small benchmark's search step runs most (batch 16, the PGD
pair stacked along the channels), the forward (``native_batch_norm`` against
:func:`arnas_ray.space._kernels.bn_forward`) and the backward with the input and weight
gradients (``native_batch_norm_backward`` against :func:`~arnas_ray.space._kernels.bn_backward`).

Usage::

    python -m benchmarks.bn_kernel [--threads 1] [--repeats 20] [--quick]

Prints one JSON line per shape: ``pytorch_fwd_ms``, ``pytorch_bwd_ms``, ``kernel_fwd_ms``,
``kernel_bwd_ms``, their ratios and the largest relative difference of the results
(``max_rel_diff``); ``kernel: false`` where the kernels cannot be built here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from arnas_ray.space import _kernels  # noqa: E402
from benchmarks._common import best_ms, emit, kernel_args, rel_diff  # noqa: E402

# (N, C, size): per-edge cells at 32x32 (one batch, the PGD pair), the 16x16 and 8x8 cells
SHAPES = [(16, 8, 32), (16, 16, 32), (16, 32, 16), (16, 32, 32), (16, 128, 16), (16, 256, 8)]
QUICK = [(2, 16, 8), (3, 8, 5)]


def _native(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = torch.native_batch_norm(x, w, None, None, None, True, 0.0,
                                                                                   1e-5)
    return out


def _native_bwd(gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, mean: torch.Tensor,
                invstd: torch.Tensor) -> tuple[torch.Tensor, ...]:
    out: tuple[torch.Tensor, ...] = torch.ops.aten.native_batch_norm_backward(gy, x, w, None, None, mean, invstd,
                                                                              True, 1e-5, [True, True, False])
    return out


def main(argv: list[str] | None = None) -> int:
    args = kernel_args(__doc__.splitlines()[0], 20, argv)
    have = _kernels.available()
    g = torch.Generator().manual_seed(0)
    for N, C, size in QUICK if args.quick else SHAPES:
        x = (torch.randn(N, C, size, size, generator=g) * 2 + 1).contiguous(memory_format=torch.channels_last)
        gy = torch.randn(x.shape, generator=g).contiguous(memory_format=torch.channels_last)
        w = torch.rand(C, generator=g) + 0.5
        y, mean, invstd = _native(x, w)
        rec: dict[str, object] = {"bench": "bn_kernel", "N": N, "C": C, "size": size, "threads": args.threads,
                                  "kernel": have, "pytorch_fwd_ms": round(best_ms(_native, (x, w), args.repeats), 4),
                                  "pytorch_bwd_ms": round(best_ms(_native_bwd, (gy, x, w, mean, invstd),
                                                                  args.repeats), 4)}
        if have:
            ours = _kernels.bn_forward(x, w, None, 1e-5)
            grads = _kernels.bn_backward(gy, x, mean, invstd, w, (True, True, False))
            assert ours is not None and grads is not None and grads[0] is not None and grads[1] is not None
            ref = _native_bwd(gy, x, w, mean, invstd)
            fwd_ms = best_ms(_kernels.bn_forward, (x, w, None, 1e-5), args.repeats)
            bwd_ms = best_ms(_kernels.bn_backward, (gy, x, mean, invstd, w, (True, True, False)), args.repeats)
            rec.update(kernel_fwd_ms=round(fwd_ms, 4), kernel_bwd_ms=round(bwd_ms, 4),
                       fwd_speedup=round(float(rec["pytorch_fwd_ms"]) / max(fwd_ms, 1e-9), 2),  # type: ignore[arg-type]
                       bwd_speedup=round(float(rec["pytorch_bwd_ms"]) / max(bwd_ms, 1e-9), 2),  # type: ignore[arg-type]
                       max_rel_diff=max(rel_diff(ours[0], y), rel_diff(ours[2], invstd), rel_diff(grads[0], ref[0]),
                                        rel_diff(grads[1], ref[1])))
        emit(rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
