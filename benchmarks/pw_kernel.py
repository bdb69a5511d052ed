"""Time grouped 1x1 convolutions: the compiled kernels against PyTorch's (oneDNN's).

For the channels_last shapes of the small benchmark's search step (batch 16; the PGD pair and
the fused edges stacked along the channels as groups), the forward (``torch.convolution``
against :func:`arnas_ray.space._kernels.pw_forward`), the input gradient and the weight
gradient (``aten::convolution_backward`` against ``pw_grad_input`` / ``pw_grad_weight``).

Usage::

    python -m benchmarks.pw_kernel [--threads 1] [--repeats 20] [--quick]

Prints one JSON line per shape (``N``, ``C_in``, ``C_out``, ``groups``, ``size``): the
``pytorch_*_ms`` and ``kernel_*_ms`` of ``fwd``, ``grad_in`` and ``grad_w``, the ratios
(``*_speedup``) and the largest relative difference of the results (``max_rel_diff``);
``kernel: false`` where the kernels cannot be built here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from arnas_ray.space import _kernels  # noqa: E402
from benchmarks._common import best_ms, emit, kernel_args, rel_diff  # noqa: E402

# (N, C_in, C_out, groups, size): one edge's convs on the PGD pair at 16x16 and 32x32, a fused
# round (four groups), a wide fused 8x8 round, a preprocessing conv (24 -> 8 per group)
SHAPES = [(16, 32, 32, 2, 16), (16, 16, 16, 2, 32), (16, 64, 64, 4, 16), (16, 768, 768, 48, 8), (16, 48, 16, 2, 32)]
QUICK = [(2, 16, 16, 2, 8), (3, 24, 16, 1, 5)]


def _native(x: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:
    return torch.convolution(x, w, None, (1, 1), (0, 0), (1, 1), False, (0, 0), groups)


def _native_bwd(gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, groups: int, mask: list[bool]) -> tuple[
        torch.Tensor, ...]:
    out: tuple[torch.Tensor, ...] = torch.ops.aten.convolution_backward(
        gy, x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], groups, mask)
    return out


def _kernel_times(x: torch.Tensor, w: torch.Tensor, gy: torch.Tensor, groups: int, repeats: int) -> dict[str, float]:
    lib = _kernels.pw_library(x, w, groups)
    assert lib is not None
    y = _kernels.pw_forward(x, w, groups, lib)
    gx = _kernels.pw_grad_input(gy, w, x.shape, groups, lib)
    gw = _kernels.pw_grad_weight(gy, x, w, groups, lib)
    assert y is not None and gx is not None and gw is not None
    ref_gx, ref_gw, _ = _native_bwd(gy, x, w, groups, [True, True, False])
    return {"kernel_fwd_ms": best_ms(_kernels.pw_forward, (x, w, groups, lib), repeats),
            "kernel_grad_in_ms": best_ms(_kernels.pw_grad_input, (gy, w, x.shape, groups, lib), repeats),
            "kernel_grad_w_ms": best_ms(_kernels.pw_grad_weight, (gy, x, w, groups, lib), repeats),
            "max_rel_diff": max(rel_diff(y, _native(x, w, groups)), rel_diff(gx, ref_gx), rel_diff(gw, ref_gw))}


def main(argv: list[str] | None = None) -> int:
    args = kernel_args(__doc__.splitlines()[0], 20, argv)
    have = _kernels.available()
    g = torch.Generator().manual_seed(0)
    for N, cin, cout, groups, size in QUICK if args.quick else SHAPES:
        x = torch.randn(N, cin, size, size, generator=g).contiguous(memory_format=torch.channels_last)
        gy = torch.randn(N, cout, size, size, generator=g).contiguous(memory_format=torch.channels_last)
        w = torch.randn(cout, cin // groups, 1, 1, generator=g)
        rec: dict[str, object] = {"bench": "pw_kernel", "N": N, "C_in": cin, "C_out": cout, "groups": groups,
                                  "size": size, "threads": args.threads, "kernel": have}
        rec["pytorch_fwd_ms"] = best_ms(_native, (x, w, groups), args.repeats)
        rec["pytorch_grad_in_ms"] = best_ms(_native_bwd, (gy, x, w, groups, [True, False, False]), args.repeats)
        rec["pytorch_grad_w_ms"] = best_ms(_native_bwd, (gy, x, w, groups, [False, True, False]), args.repeats)
        if have:
            rec.update(_kernel_times(x, w, gy, groups, args.repeats))
            for part in ("fwd", "grad_in", "grad_w"):
                rec[f"{part}_speedup"] = round(float(rec[f"pytorch_{part}_ms"])  # type: ignore[arg-type]
                                               / max(float(rec[f"kernel_{part}_ms"]), 1e-9), 2)  # type: ignore[arg-type]
        emit({k: round(v, 4) if isinstance(v, float) and k != "max_rel_diff" else v for k, v in rec.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
