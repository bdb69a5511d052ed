"""Helpers shared by the benchmark scripts: machine description and the results log."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# where emit() appends its lines: the untracked benchmarks/local/ (in .gitignore), so a run
# leaves the checkout clean; ARNAS_BENCH_RESULTS overrides it (the smoke tests use a temporary
# folder; `python -m benchmarks --record` the tracked benchmarks/results/, for a recorded run
# that is then committed on purpose)
LOCAL = Path(__file__).parent / "local"
RECORDED = Path(__file__).parent / "results"
RESULTS = Path(os.environ.get("ARNAS_BENCH_RESULTS") or LOCAL)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        if m:
            return m.group(1).strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_tag() -> str:
    info = machine()
    name = info.get("gpu") or info["cpu"]
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:60] or "machine"


def kernel_args(description: str, repeats: int, argv: list[str] | None) -> argparse.Namespace:
    """The kernel benchmarks' options (``--threads``, ``--repeats``, ``--quick``), parsed; sets
    PyTorch's thread count."""
    import torch

    a = argparse.ArgumentParser(description=description)
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--repeats", type=int, default=repeats)
    a.add_argument("--quick", action="store_true", help="two tiny shapes (smoke run)")
    args = a.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def best_ms(fn: Callable[..., object], args: tuple[object, ...], repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``fn(*args)`` after one warm-up call, in milliseconds."""
    fn(*args)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def rel_diff(a: Any, b: Any) -> float:
    """The largest absolute difference of two tensors relative to the largest magnitude of ``b``."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def emit(record: dict[str, Any], *, log: bool = True) -> None:
    """Print one JSON line and append it to ``RESULTS/<machine>.jsonl``."""
    record = {**record, "machine": machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    line = json.dumps(record)
    print(line, flush=True)
    if log:
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(RESULTS / f"{machine_tag()}.jsonl", "a") as fh:
            fh.write(line + "\n")


def matmul_gflops(device: str = "cpu", n: int = 1024, repeats: int = 5) -> float:
    """Measured fp32 matmul GFLOP/s of this machine (the ceiling to compare passes against)."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    if device != "cpu":
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


# forward-equivalent passes of one search step (a backward ~ 2 forwards): PGD 2x7 (fwd + input
# bwd), architecture (first: 2 passes; second: 1 unrolled + 2 val + 4 HVP), weight step 1. A
# paired PGD pass (both attacks in one grouped pass) counts as the two passes it replaces.
PASSES = {"first": 14 + 2 + 1, "second": 14 + 7 + 1}


def time_search_step(*, C: int, cells: int, size: int, batch: int, order: str, device: Any, steps: int,
                     amp: str = "off", pair: bool = True, compile_: bool = False) -> dict[str, Any]:
    """Seconds per full MGDA search step (after one warm-up step), images/s, peak memory (CUDA:
    allocator peak; CPU: growth of this process's max RSS after building the model) and the
    achieved GFLOP/s (supernet MACs x 2 x 3 (fwd + bwd) x forward-equivalent passes / time)."""
    import resource

    import torch

    from arnas_ray._loop import steady_gc
    from arnas_ray.search import SearchConfig
    from arnas_ray.search.loop import build_search, search_step
    from arnas_ray.space import count_macs

    device = torch.device(device)
    cfg = SearchConfig(channels=C, cells=cells, batch_size=batch, order=order, amp=amp, strategy="mgda",
                       pair_attacks=pair, compile=compile_)
    parts = build_search(cfg, 10, 3, device)
    parts.model.train()
    g = torch.Generator().manual_seed(0)
    x_tr, x_val = (torch.rand(batch, 3, size, size, generator=g).to(device) for _ in range(2))
    y_tr, y_val = (torch.randint(0, 10, (batch,), generator=g).to(device) for _ in range(2))
    gen = torch.Generator().manual_seed(1)

    def step() -> None:
        out = search_step(parts, x_tr, y_tr, x_val, y_val, eta=cfg.lr, strategy="mgda", generator=gen)
        if not bool(out.finite):
            raise FloatingPointError("non-finite search step in the benchmark")

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()  # warm-up (and compile, if asked)
    if cuda:
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    with steady_gc():  # as run_search's epochs
        for _ in range(steps):
            step()
    if cuda:
        torch.cuda.synchronize(device)
    dt = (time.perf_counter() - t) / steps
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # KiB on Linux
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    macs = count_macs(parts.model, size, 3, device=device)  # per image, one forward
    gflops = 2 * macs * batch * 3 * PASSES[order] / dt / 1e9
    return {"sec_per_step": round(dt, 4), "images_per_s": round(batch / dt, 3), "peak_mem_mb": round(peak, 1),
            "macs_per_image": macs, "achieved_gflops": round(gflops, 2)}
