"""Ray Tune function trainables: one search trial and one retrain trial.

Both report every epoch to Tune with a checkpoint (a directory holding the trial's own
checkpoint file) and restore from ``tune.get_checkpoint()`` when Tune retries them, so a trial
whose node died continues from its last epoch. Devices come from Ray's assignment: a trial
with a GPU share runs on CUDA, a CPU trial sets torch's threads to its CPU share.
A non-finite loss ends only that trial: it reports ``status = failed`` with the reason and
returns (retrying a deterministic divergence would only repeat it).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from arnas_ray.errors import DivergenceError
from arnas_ray.space import Genotype
from arnas_ray.sweep.spec import SweepSpec, TrialPoint

__all__ = ["retrain_trainable", "search_trainable"]

logger = logging.getLogger(__name__)


def _device(gpu_share: float) -> torch.device:
    if gpu_share > 0 and ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda")  # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU
    return torch.device("cpu")


def _setup(cpu: float, gpu: float) -> torch.device:
    torch.set_num_threads(max(1, int(cpu)))
    device = _device(gpu)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def _workdir(key: str) -> Path:
    """A fresh local directory for the trial's checkpoint, seeded from Tune's checkpoint."""
    work = Path(tempfile.mkdtemp(prefix=f"arnas-{key[:40]}-"))
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as src:
            for f in Path(src).iterdir():
                if f.is_file():
                    shutil.copy2(f, work / f.name)
    return work


def _where(device: torch.device) -> dict[str, str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    try:
        node = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside a Ray worker
        node = socket.gethostname()
    return {"device": name, "node": node}


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def _fail(key: str, exc: BaseException, device: torch.device, started: float) -> None:
    tune.report({"trial_key": key, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                 "wall_s": time.time() - started, **_where(device)})


def point_from_config(config: dict[str, Any], spec: SweepSpec) -> TrialPoint:
    """The trial point of a Tune config: explicit (grid) or sampled by Optuna."""
    if "point" in config:
        p = config["point"]
        ratios = tuple(p["channel_ratios"]) if p["channel_ratios"] is not None else None
        return TrialPoint(p["key"], p["placement"], ratios, p["strategy"], int(p["seed"]))
    ratios = (1.0, round(float(config["r1"]), 3), round(float(config["r2"]), 3))
    placement = config["placement"]
    seed = spec.grid.seed[0]
    key = f"optuna_{placement}_{ratios[1]:g}-{ratios[2]:g}_{config['strategy']}_s{seed}"
    return TrialPoint(key, placement, ratios, config["strategy"], seed)


def search_trainable(config: dict[str, Any]) -> None:
    """One ARNAS search (``run_search``) as a Tune trial."""
    from arnas_ray.search import run_search

    spec = SweepSpec.from_dict(config["spec"])
    point = point_from_config(config, spec)
    device = _setup(spec.resources.cpu, spec.resources.gpu)
    started = time.time()
    work = _workdir(point.key)
    where = _where(device)
    try:
        search_cfg = spec.search_config(point)
        data = spec.dataset.load(seed=point.seed)

        def report(metrics: dict[str, Any]) -> None:
            tune.report({**metrics, "trial_key": point.key, "status": "running", **where},
                        checkpoint=tune.Checkpoint.from_directory(str(work)))

        result = run_search(search_cfg, data, device, callback=report, checkpoint_dir=work)
        tune.report({
            "trial_key": point.key, "status": "finished", "epoch": result.epochs,
            "nat_acc": result.nat_acc, "pgd_acc": result.pgd_acc, "genotype": result.genotype.to_json(),
            "params": result.params, "flops": result.macs, "wall_s": time.time() - started,
            "channels": search_cfg.width(), **where,
        }, checkpoint=tune.Checkpoint.from_directory(str(work)))
    except DivergenceError as exc:
        _fail(point.key, exc, device, started)
    except (RuntimeError, MemoryError) as exc:
        if not _is_oom(exc):
            raise
        _fail(point.key, exc, device, started)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def retrain_trainable(config: dict[str, Any]) -> None:
    """Adversarial retraining of one selected genotype, then the full robust evaluation."""
    from arnas_ray.train import evaluate, retrain

    spec = SweepSpec.from_dict(config["spec"])
    point = config["point"]
    key = point["key"]
    res_spec = spec.retrain_resources or spec.resources
    device = _setup(res_spec.cpu, res_spec.gpu)
    started = time.time()
    work = _workdir(key)
    where = _where(device)
    try:
        genotype = Genotype.from_json(point["genotype"])
        rcfg = spec.retrain_config(tuple(point["placement"]), tuple(point["channel_ratios"]), int(point["seed"]))
        data = spec.dataset.load(cutout=rcfg.cutout, seed=rcfg.seed)

        def report(metrics: dict[str, Any]) -> None:
            tune.report({**metrics, "trial_key": key, "status": "running", **where},
                        checkpoint=tune.Checkpoint.from_directory(str(work)))

        result = retrain(genotype, rcfg, data, device, out_dir=work, callback=report)
        ev = spec.evaluation
        er = evaluate(result.model, data, device, attacks=ev.attacks, aa_subset=ev.aa_subset, limit=ev.limit,
                      batch_size=ev.batch_size, eps=rcfg.attack.eps, seed=rcfg.seed)
        tune.report({
            "trial_key": key, "status": "finished", "epoch": len(result.history),
            "nat_acc": er.nat_acc, "fgsm_acc": er.fgsm_acc, "pgd20_acc": er.pgd20_acc,
            "pgd100_acc": er.pgd100_acc, "aa_acc": er.aa_acc, "eval_warnings": "; ".join(er.warnings),
            "genotype": genotype.to_json(), "params": result.params, "flops": result.macs,
            "best_epoch": result.best_epoch, "wall_s": time.time() - started, "channels": rcfg.channels, **where,
        }, checkpoint=tune.Checkpoint.from_directory(str(work)))
    except DivergenceError as exc:
        _fail(key, exc, device, started)
    except (RuntimeError, MemoryError) as exc:
        if not _is_oom(exc):
            raise
        _fail(key, exc, device, started)
    finally:
        shutil.rmtree(work, ignore_errors=True)


os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
