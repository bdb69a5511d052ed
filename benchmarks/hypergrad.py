"""Hypergradient quality: ``first`` and ``second`` (finite differences) against ``exact``.

On one supernet state (fresh and seeded, after ``--warm-steps`` search steps, or loaded from a
search checkpoint ``search.pt``) and one search batch (the weight split's and the architecture
split's first batches, both attacked with the search's PGD, as a search step does), computes
the per-objective hypergradients ``u_nat``, ``u_adv`` of each order with
:class:`arnas_ray.search.Architect` and prints one JSON line per order::

    {"bench": "hypergrad", "order": "second", "fd_radius": 0.01,
     "cos_nat": ..., "cos_adv": ..., "rel_err_nat": ..., "rel_err_adv": ...,
     "sec": ..., "peak_mem_mb": ..., "mem_method": ..., "C": ..., "cells": ..., "size": ..., ...}

``cos_*`` is the cosine and ``rel_err_*`` the relative error ``||u - u_exact|| / ||u_exact||``
against ``exact`` computed on the same state and batch (so the ``exact`` line has cosine 1 and
error 0); ``sec`` the median wall time of ``--repeats`` calls. Peak memory (``peak_mem_mb``) is
measured per order: on CUDA ``torch.cuda.max_memory_allocated`` during the call minus the
memory allocated before (``mem_method: cuda_max_allocated``); on CPU in a fresh subprocess per
order, the peak resident set size during the call (``/proc/self/statm`` sampled every
millisecond by a thread) minus the resident size before it, after glibc's ``malloc_trim``
has returned the freed heap to the OS (``mem_method: rss_poll``).
``--no-memory`` skips it (``null``).

Usage::

    python -m benchmarks.hypergrad [--C 8] [--cells 5] [--size 16] [--dataset digits]
        [--batch 32] [--fd-radius 0.01] [--warm-steps 0] [--checkpoint RUN/search.pt]
        [--dtype float32|float64] [--orders first second exact] [--repeats 1] [--no-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arnas_ray.attacks import frozen_parameters, pgd  # noqa: E402
from arnas_ray.checkpoint import load_checkpoint  # noqa: E402
from arnas_ray.data import load_dataset, make_loader  # noqa: E402
from arnas_ray.search import ArchBatch, Architect, SearchConfig  # noqa: E402
from arnas_ray.search._evaluate import split_indices  # noqa: E402
from arnas_ray.search.loop import SearchParts, build_search, search_step  # noqa: E402

ORDERS = ("first", "second", "exact")


def _flat(us: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([u.detach().reshape(-1).double() for u in us])


def quality(u: Sequence[torch.Tensor], ref: Sequence[torch.Tensor]) -> tuple[float, float]:
    """(cosine, relative error ``||u - ref|| / ||ref||``) of two hypergradients."""
    a, b = _flat(u), _flat(ref)
    cos = float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))
    return cos, float((a - b).norm() / b.norm().clamp_min(1e-300))


def architect_for(parts: SearchParts, order: str, fd_radius: float) -> Architect:
    c = parts.config
    return Architect(parts.model, order=order, strategy="mgda", adv_coef=c.adv_coef, normalization=c.normalization,
                     w_momentum=c.momentum, w_weight_decay=c.weight_decay, fd_radius=fd_radius, diagnostics=False)


def hypergradients(parts: SearchParts, batch: ArchBatch, order: str, *, fd_radius: float) -> list[list[torch.Tensor]]:
    """``[u_nat, u_adv]`` of ``order`` on the state of ``parts`` (the model is not changed)."""
    eta = parts.w_opt.param_groups[0]["lr"]
    us, _ = architect_for(parts, order, fd_radius).hypergradients(batch, eta=eta, w_optimizer=parts.w_opt)
    return [u for u in us if u is not None]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(parts: SearchParts, batch: ArchBatch, *, orders: Sequence[str] = ORDERS, fd_radius: float = 0.01,
            repeats: int = 1) -> list[dict[str, Any]]:
    """One record per order: cosine and relative error per objective against ``exact``, and
    the median seconds of ``repeats`` calls (no memory; see :func:`peak_memory_mb`)."""
    device = next(parts.model.parameters()).device
    exact = hypergradients(parts, batch, "exact", fd_radius=fd_radius)
    out = []
    for order in orders:
        times = []
        for _ in range(repeats):
            _sync(device)
            t = time.perf_counter()
            us = hypergradients(parts, batch, order, fd_radius=fd_radius)
            _sync(device)
            times.append(time.perf_counter() - t)
        rec: dict[str, Any] = {"bench": "hypergrad", "order": order,
                               "fd_radius": fd_radius if order == "second" else None}
        for name, u, ref in zip(("nat", "adv"), us, exact):
            rec[f"cos_{name}"], rec[f"rel_err_{name}"] = quality(u, ref)
        rec["sec"] = round(statistics.median(times), 5)
        out.append(rec)
    return out


def _trim() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), so that the resident size
    grows with what a call allocates instead of reusing pages freed earlier."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_mb(parts: SearchParts, batch: ArchBatch, order: str, *, fd_radius: float) -> tuple[float, str]:
    """Extra peak memory of one call of ``order``: CUDA allocator peak, or sampled RSS on CPU."""
    device = next(parts.model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        hypergradients(parts, batch, order, fd_radius=fd_radius)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20, "cuda_max_allocated"
    _trim()
    base, peak, done = _rss_bytes(), [0], threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        hypergradients(parts, batch, order, fd_radius=fd_radius)
    finally:
        done.set()
        thread.join()
    return max(0, max(peak[0], _rss_bytes()) - base) / 2**20, "rss_poll"


def _batches(config: SearchConfig, data: Any, device: torch.device, dtype: torch.dtype):
    """(x_tr, y_tr, x_val, y_val) forever: the weight and architecture splits' batches, seeded."""
    train_idx, arch_idx = split_indices(len(data.train), config.train_portion, config.seed)
    loaders = [make_loader(torch.utils.data.Subset(data.train, idx), config.batch_size, shuffle=True,
                           seed=config.seed + i, drop_last=True) for i, idx in enumerate((train_idx, arch_idx))]
    while True:
        for (x_tr, y_tr), (x_val, y_val) in zip(*loaders):
            yield (x_tr.to(device, dtype), y_tr.to(device), x_val.to(device, dtype), y_val.to(device))


def search_batch(parts: SearchParts, x_tr: torch.Tensor, y_tr: torch.Tensor, x_val: torch.Tensor,
                 y_val: torch.Tensor, *, seed: int = 0) -> ArchBatch:
    """The architecture step's inputs as a search step makes them: both batches under PGD."""
    attack, model = parts.config.attack, parts.model
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with frozen_parameters(model.parameters()):
        x_tr_adv = pgd(model, x_tr, y_tr, attack, generator=gen)
        x_val_adv = pgd(model, x_val, y_val, attack, generator=gen)
    return ArchBatch(x_tr_adv, y_tr, x_val, y_val, x_val_adv)


def build_state(*, config: SearchConfig, dataset: str = "digits", size: int = 16, checkpoint: Path | None = None,
                warm_steps: int = 0, dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu") -> tuple[SearchParts, ArchBatch]:
    """The supernet state (``config``'s fresh supernet, or ``checkpoint``'s, whose config then
    replaces ``config``), after ``warm_steps`` search steps, and the next search batch."""
    device = torch.device(device)
    state = load_checkpoint(checkpoint, map_location=device) if checkpoint is not None else None
    if state is not None:
        config = SearchConfig.from_dict(state["config"])
    data = load_dataset(dataset, image_size=size, seed=config.seed, augment=False)
    parts = build_search(config, data.num_classes, data.channels, device)
    if state is not None:
        parts.model.load_state_dict(state["model"])
        parts.w_opt.load_state_dict(state["w_opt"])
        parts.architect.optimizer.load_state_dict(state["a_opt"])
    parts.model.to(dtype)
    for st in parts.w_opt.state.values():  # momentum buffers follow the weights' dtype
        for k, v in st.items():
            if torch.is_tensor(v) and v.is_floating_point():
                st[k] = v.to(dtype)
    batches = _batches(config, data, device, dtype)
    gen = torch.Generator().manual_seed(config.seed)
    for _ in range(warm_steps):
        parts.model.train()
        search_step(parts, *next(batches), eta=parts.w_opt.param_groups[0]["lr"], strategy=config.strategy,
                    generator=gen)
    return parts, search_batch(parts, *next(batches), seed=config.seed)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--cells", type=int, default=5)
    p.add_argument("--size", type=int, default=16, help="image size")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--eps", type=float, default=0.15, help="PGD radius (alpha = eps / 4); digits: 0.15")
    p.add_argument("--attack-steps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fd-radius", type=float, default=0.01)
    p.add_argument("--warm-steps", type=int, default=0, help="search steps (first order) before measuring")
    p.add_argument("--checkpoint", type=Path, default=None, help="a search.pt to load the state from")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--orders", nargs="+", choices=ORDERS, default=list(ORDERS))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-memory", action="store_true", help="skip the per-order peak memory")
    p.add_argument("--worker", choices=ORDERS, default=None, help=argparse.SUPPRESS)
    return p


def _state(a: argparse.Namespace) -> tuple[SearchParts, ArchBatch]:
    from arnas_ray.attacks import AttackSpec

    config = SearchConfig(channels=a.C, cells=a.cells, batch_size=a.batch, seed=a.seed, order="first",
                          fd_radius=a.fd_radius, channels_last=False,
                          attack=AttackSpec(kind="pgd", eps=a.eps, alpha=a.eps / 4, steps=a.attack_steps))
    return build_state(config=config, dataset=a.dataset, size=a.size, checkpoint=a.checkpoint,
                       warm_steps=a.warm_steps, dtype=getattr(torch, a.dtype), device=a.device)


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    parts, batch = _state(a)
    if a.worker is not None:  # one order's peak memory, in a process of its own
        mb, how = peak_memory_mb(parts, batch, a.worker, fd_radius=a.fd_radius)
        print(json.dumps({"peak_mem_mb": round(mb, 2), "mem_method": how}), flush=True)
        return 0
    from benchmarks._common import emit

    c = parts.config
    meta = {"C": c.channels, "cells": c.cells, "size": a.size, "dataset": a.dataset, "batch": c.batch_size,
            "warm_steps": a.warm_steps, "checkpoint": str(a.checkpoint) if a.checkpoint else None,
            "dtype": a.dtype, "device": a.device, "threads": torch.get_num_threads()}
    for rec in measure(parts, batch, orders=a.orders, fd_radius=a.fd_radius, repeats=a.repeats):
        rec.update(peak_mem_mb=None, mem_method=None)
        if not a.no_memory and torch.device(a.device).type == "cuda":
            mb, rec["mem_method"] = peak_memory_mb(parts, batch, rec["order"], fd_radius=a.fd_radius)
            rec["peak_mem_mb"] = round(mb, 2)
        elif not a.no_memory:
            argv_w = [x for x in (argv if argv is not None else sys.argv[1:])]
            proc = subprocess.run([sys.executable, __file__, *argv_w, "--worker", rec["order"]],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"memory worker for {rec['order']} failed:\n{proc.stderr[-2000:]}")
            rec.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        emit({**rec, **meta})
    return 0


if __name__ == "__main__":
    sys.exit(main())
