"""What every trial does around its work: device and threads from Ray's assignment, node-local
checks, the checkpoint work dir, where it runs, and failure handling (divergence, out of memory)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from arnas_ray.errors import DivergenceError
from arnas_ray.sweep.spec import SweepSpec

__all__ = ["TrialSetupError", "check_data_root", "is_oom", "report_failure", "run_guarded", "setup_device",
           "where", "workdir"]

#: one line per trial start, on the worker's stderr: what `ray job logs` shows of each trial
_log = logging.getLogger("arnas_ray.trial")
if not _log.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("arnas-ray trial: %(message)s"))
    _log.addHandler(_handler)
    _log.setLevel(logging.INFO)
    _log.propagate = False


class TrialSetupError(RuntimeError):
    """A trial cannot run on the node it was placed on (no GPU, no data); names node and reason."""


def _node() -> str:
    try:
        node_id = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside a Ray worker
        node_id = ""
    host = socket.gethostname()
    return f"{host} ({node_id[:12]})" if node_id else host


def _assigned(name: str, default: float) -> float:
    try:
        return float(ray.get_runtime_context().get_assigned_resources().get(name, default))
    except Exception:  # noqa: BLE001 - outside a Ray worker
        return default


def _device(gpu_share: float) -> torch.device:
    if gpu_share <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrialSetupError(
            f"the trial asks for resources.gpu={gpu_share:g} but no CUDA device is visible on node "
            f"{_node()} (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); it does not fall back "
            "to the CPU")
    return torch.device("cuda")  # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU


def setup_device(cpu: float, gpu: float) -> torch.device:
    """Threads from the CPUs Ray assigned (they may differ from the spec after a resume with
    other resources) and the device. A trial on a fraction of a GPU caps its CUDA memory to
    that fraction, so trials sharing the card cannot starve each other."""
    torch.set_num_threads(max(1, int(_assigned("CPU", cpu))))
    share = _assigned("GPU", gpu) if gpu > 0 else 0.0
    device = _device(share)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if 0 < share < 1:
            torch.cuda.set_per_process_memory_fraction(share, device)
    return device


def check_data_root(spec: SweepSpec) -> None:
    """The data root, checked on the trial's own node: a missing one names the node and the path."""
    root = spec.dataset.root
    if root is not None and "://" not in root and not Path(root).exists():
        raise TrialSetupError(f"data set root {root!r} ({spec.dataset.name}) does not exist on node {_node()}")


def workdir(key: str) -> Path:
    """A fresh local directory for the trial's checkpoint, seeded from Tune's checkpoint."""
    work = Path(tempfile.mkdtemp(prefix=f"arnas-{key[:40]}-"))
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as src:
            for f in Path(src).iterdir():
                if f.is_file():
                    shutil.copy2(f, work / f.name)
    return work


def where(device: torch.device) -> dict[str, Any]:
    """Where the trial runs: device, Ray node id, and the CPUs Ray assigned it (a resume may
    change them)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    try:
        node = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside a Ray worker
        node = socket.gethostname()
    where = {"device": name, "node": node, "cpus": _assigned("CPU", float(torch.get_num_threads()))}
    _log.info("trial on node %s (%s), device %s, %g CPU(s)", _node(), node[:12], name, where["cpus"])
    return where


def is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def report_failure(key: str, exc: BaseException, here: dict[str, Any], started: float) -> None:
    """End the trial ``failed`` with the reason (a deterministic failure: not retried by Tune)."""
    tune.report({"trial_key": key, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                 "wall_s": time.time() - started, **here})


def run_guarded(key: str, run: Callable[[], None], device: torch.device, here: dict[str, Any],
                started: float) -> None:
    """``run()``; a divergence ends the trial ``failed``; an out-of-memory error is retried
    once (CUDA cache emptied; the run resumes from its checkpoint) before it does."""
    for attempt in (1, 2):
        try:
            run()
            return
        except DivergenceError as exc:
            report_failure(key, exc, here, started)
            return
        except (RuntimeError, MemoryError) as exc:
            if not is_oom(exc):
                raise
            if attempt == 2:
                report_failure(key, RuntimeError(f"out of memory twice (retried once): {exc}"), here, started)
                return
            _log.warning("out of memory in trial %s (%s); retrying once from its checkpoint", key, exc)
            if device.type == "cuda":
                torch.cuda.empty_cache()
