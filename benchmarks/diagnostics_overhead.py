"""The cost of the per-step search diagnostics: ``search_step`` with them on and off.

Two identical searches (same seed and batches), one with ``SearchConfig.diagnostics`` on and
one with it off, step in turns in one process: each round times ``--steps`` steps of one, then
of the other (the order alternating between rounds), so that load drifts on a shared machine
hit both alike. A step here is what ``run_search`` does per step: ``search_step`` and the
collection of its diagnostics (``EpochDiagnostics.add``); each round ends with the epoch's one
host copy (``EpochDiagnostics.records``), counted in the round.

Prints one JSON line per round (``sec_per_step_on``, ``sec_per_step_off``) and a summary::

    {"bench": "diagnostics_overhead", "order": ..., "sec_per_step_on": ..., "sec_per_step_off": ...,
     "overhead": on / off - 1 (medians), "overhead_per_round": [...],
     "diag_sec": ..., "diag_fraction": diag_sec / sec_per_step_off, ...}

``diag_sec`` is the median time of the diagnostics alone (``step_vector`` and ``add`` on tensors
shaped like the alphas, 200 calls; on CUDA the launch time, as the step does not wait for
them), the overhead bound that load drift does not blur.

Usage::

    python -m benchmarks.diagnostics_overhead [--C 8] [--cells 5] [--size 16] [--batch 32]
        [--order first second] [--steps 3] [--rounds 5] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arnas_ray.search import SearchConfig  # noqa: E402
from arnas_ray.search.diagnostics import EpochDiagnostics, step_vector  # noqa: E402
from arnas_ray.search.loop import SearchParts, build_search, search_step  # noqa: E402


class _Search:
    """One search's parts, a fixed batch and its step routine."""

    def __init__(self, diagnostics: bool, a: argparse.Namespace, order: str, device: torch.device):
        cfg = SearchConfig(channels=a.C, cells=a.cells, batch_size=a.batch, order=order, diagnostics=diagnostics,
                           seed=0)
        self.parts: SearchParts = build_search(cfg, 10, 3, device)
        g = torch.Generator().manual_seed(0)
        self.x_tr, self.x_val = (torch.rand(a.batch, 3, a.size, a.size, generator=g).to(device) for _ in range(2))
        self.y_tr, self.y_val = (torch.randint(0, 10, (a.batch,), generator=g).to(device) for _ in range(2))
        self.gen = torch.Generator().manual_seed(1)
        self.device = device

    def run(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps and the epoch-end copy of their records."""
        diag = EpochDiagnostics(1, "mgda")
        arch = self.parts.architect
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t = time.perf_counter()
        for _ in range(steps):
            self.parts.model.train()
            out = search_step(self.parts, self.x_tr, self.y_tr, self.x_val, self.y_val, eta=0.025, strategy="mgda",
                              generator=self.gen)
            diag.add(arch.last_stats.diagnostics if arch.last_stats is not None else None, out.gamma)
        records = diag.records()  # the host copy (a sync, as at the end of an epoch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = (time.perf_counter() - t) / steps
        if len(records) != steps:
            raise RuntimeError("lost step records")
        return dt


def diagnostics_seconds(parts: SearchParts, calls: int = 200) -> float:
    """Median seconds of one :func:`step_vector` + ``EpochDiagnostics.add`` on tensors shaped
    like the supernet's alphas (what diagnostics add to a step), timed alone: a bound on the
    overhead that load drift cannot blur."""
    alphas = parts.architect.alphas
    g = torch.Generator().manual_seed(0)
    u_nat, u_adv = ([torch.randn(a.shape, generator=g).to(a) for a in alphas] for _ in range(2))
    direction = [0.5 * (x + y) for x, y in zip(u_nat, u_adv)]
    gamma, losses = alphas[0].new_tensor(0.5), [alphas[0].new_tensor(2.3), alphas[0].new_tensor(0.3)]
    diag, times = EpochDiagnostics(1, "mgda"), []
    for _ in range(calls):
        t = time.perf_counter()
        diag.add(step_vector(u_nat, u_adv, direction, gamma, losses, alphas), gamma)
        times.append(time.perf_counter() - t)
    if alphas[0].device.type == "cuda":
        torch.cuda.synchronize(alphas[0].device)
    return statistics.median(times)


def bench(order: str, a: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    on, off = _Search(True, a, order, device), _Search(False, a, order, device)
    on.run(1), off.run(1)  # warm-up
    rounds = []
    for r in range(a.rounds):
        pair = (on, off) if r % 2 == 0 else (off, on)
        times = {id(s): s.run(a.steps) for s in pair}
        rec = {"round": r, "order": order, "sec_per_step_on": round(times[id(on)], 5),
               "sec_per_step_off": round(times[id(off)], 5)}
        rounds.append(rec)
        print(json.dumps(rec), flush=True)
    t_on = statistics.median(x["sec_per_step_on"] for x in rounds)
    t_off = statistics.median(x["sec_per_step_off"] for x in rounds)
    t_diag = diagnostics_seconds(on.parts)
    return {"bench": "diagnostics_overhead", "order": order, "sec_per_step_on": round(t_on, 5),
            "sec_per_step_off": round(t_off, 5), "overhead": round(t_on / t_off - 1, 4),
            "overhead_per_round": [round(x["sec_per_step_on"] / x["sec_per_step_off"] - 1, 4) for x in rounds],
            "diag_sec": round(t_diag, 7), "diag_fraction": round(t_diag / t_off, 6),
            "C": a.C, "cells": a.cells, "size": a.size, "batch": a.batch, "steps": a.steps, "rounds": a.rounds,
            "device": str(device), "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--cells", type=int, default=5)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--order", nargs="+", choices=("first", "second", "exact"), default=["first", "second"])
    p.add_argument("--steps", type=int, default=3, help="timed steps per search per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    from benchmarks._common import emit

    for order in a.order:
        emit(bench(order, a, torch.device(a.device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
