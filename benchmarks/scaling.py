"""How the cost of one search step grows with width C, cells L, image size and AMP.

    python -m benchmarks.scaling [--device cpu|cuda] [--order first] [--quick]

One JSON line per point: sec/step and images/s of one full MGDA search step (both PGD-7
attacks, architecture step, weight step) and achieved GFLOP/s (supernet MACs x 2 x forward-
equivalent passes / time) as a fraction of this machine's measured fp32 matmul GFLOP/s.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks._common import emit, matmul_gflops, time_search_step


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--order", default="second", choices=("first", "second"))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--amp", nargs="+", default=None, choices=("off", "bf16"),
                   help="precisions to time (default: off, plus bf16 on CUDA)")
    a = p.parse_args()
    device = torch.device(a.device)
    peak = matmul_gflops(a.device, n=2048 if device.type == "cuda" else 1024)
    base = {"C": 8, "cells": 5, "size": 32, "batch": 16}
    points = [("C", [4, 8, 16]), ("cells", [5, 8, 11]), ("size", [8, 16, 32])]
    if a.quick:
        points = [("C", [4, 8])]
    amps = a.amp or (["off", "bf16"] if device.type == "cuda" else ["off"])
    for amp in amps:
        for name, values in points:
            for v in values:
                shape = {**base, name: v}
                r = time_search_step(C=shape["C"], cells=shape["cells"], size=shape["size"], batch=shape["batch"],
                                     order=a.order, device=device, amp=amp, steps=a.steps)
                emit({"bench": "scaling", "vary": name, **shape, "order": a.order, "amp": amp,
                      "device": a.device, **r, "matmul_gflops": round(peak, 1),
                      "fraction_of_matmul": round(r["achieved_gflops"] / peak, 4)})


if __name__ == "__main__":
    main()
