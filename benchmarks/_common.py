"""Helpers shared by the benchmark scripts: machine description and the results log."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


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


def emit(record: dict[str, Any], *, log: bool = True) -> None:
    """Print one JSON line and append it to benchmarks/results/<machine>.jsonl."""
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
