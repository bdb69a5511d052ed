"""The state of one retraining run: built from its inputs, restored from and written to its
checkpoint (``checkpoint.pt``) and history (``history.jsonl``) files."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from arnas_ray import _loop
from arnas_ray._config import to_dict
from arnas_ray._loop import check_resumable
from arnas_ray.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from arnas_ray.data import DataSplits
from arnas_ray.device import keep_heap
from arnas_ray.errors import CheckpointError, SpecError
from arnas_ray.space import Genotype
from arnas_ray.train._model import FORMAT, build_network, metadata
from arnas_ray.train.config import RetrainConfig

__all__ = ["RunState", "build_run", "check_compatible", "restore", "resume_run", "save_run",
           "write_history"]

logger = logging.getLogger(__name__)

#: Config fields that may differ between a run and its resumption (they do not change the math).
_RESUME_FREE = ("num_workers",)
_RESUME_REMEDY = "pass resume=False (retrain --no-resume) or use another out_dir"
#: The run description a checkpoint must share with the run that resumes from it.
_RUN_KEYS = ("dataset", "num_classes", "in_channels", "image_size")


@dataclass
class RunState:
    """One retraining run while it trains: what it was given and the state a checkpoint keeps."""

    genotype: Genotype
    config: RetrainConfig
    data: DataSplits
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    meta: dict[str, Any]
    out: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    start: int = 0
    wall_before: float = 0.0
    t_session: float = field(default_factory=time.perf_counter)

    @property
    def ckpt_path(self) -> Path | None:
        return self.out / "checkpoint.pt" if self.out is not None else None

    def wall_s(self) -> float:
        """Seconds of training, over every session of a resumed run."""
        return self.wall_before + time.perf_counter() - self.t_session


def build_run(genotype: Genotype, config: RetrainConfig, data: DataSplits, device: torch.device,
              out_dir: str | os.PathLike[str] | None) -> RunState:
    """A fresh run: the network on ``device``, its SGD optimiser and its metadata (on CPU, with
    this process's heap kept: :func:`arnas_ray.device.keep_heap`)."""
    if device.type == "cpu":
        keep_heap()
    meta = metadata(genotype, config, num_classes=data.num_classes, in_channels=data.channels,
                    image_size=data.image_size, dataset=data.name)
    model = build_network(genotype, config, data.num_classes, data.channels).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, foreach=True)  # as the search's
    out = Path(out_dir) if out_dir is not None else None
    return RunState(genotype, config, data, device, model, optimizer, meta, out)


def _run_settings(genotype_json: Any, meta: Mapping[str, Any], config: Any, path: Path
                  ) -> dict[str, Any] | Any:
    """The settings a resumed run must share: the genotype (canonical JSON), the data shape
    and every config field (returned as given when the config is not a mapping)."""
    try:
        genotype = json.dumps(Genotype.from_json(genotype_json).to_dict(), sort_keys=True)
    except SpecError as exc:
        raise CheckpointError(f"{path}: the checkpoint holds an invalid genotype ({exc}); "
                              f"{_RESUME_REMEDY}") from None
    if not isinstance(config, Mapping):
        return config
    return {"genotype": genotype, **{k: meta.get(k) for k in _RUN_KEYS}, **config}


def check_compatible(state: dict[str, Any], run: RunState, path: Path) -> None:
    """Refuse a checkpoint of another format, genotype, data shape or config."""
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: the checkpoint has format {state.get('format')!r}, "
                              f"expected {FORMAT!r} (a checkpoint.pt written by retrain)")
    saved = _run_settings(state.get("genotype"), state, state.get("config"), path)
    current = _run_settings(run.meta["genotype"], run.meta, to_dict(run.config), path)
    check_resumable(saved, current, path=path, free=_RESUME_FREE, remedy=_RESUME_REMEDY)


def resume_run(run: RunState, path: Path) -> None:
    """Restore the weights, the optimiser, the RNG states and the history from ``path``.

    Raises:
        CheckpointError: the file cannot be loaded, was written by another run, or is
            incomplete; the message starts with the file and ends with the remedy.
    """
    try:
        state = load_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; {_RESUME_REMEDY}") from None
    check_compatible(state, run, path)
    restore(run, state, path)
    logger.info("resuming %s after epoch %d of %d", path, run.start, run.config.epochs)


def restore(run: RunState, state: dict[str, Any], path: Path) -> None:
    """Put a loaded checkpoint of this run (see :func:`check_compatible`) into ``run``."""
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start, history, best = int(state["epoch"]), list(state["history"]), state["best"]
        if not 1 <= start <= run.config.epochs or len(history) != start:
            raise ValueError(f"epoch {start} with {len(history)} history records")
        best_epoch, best_model = int(best["epoch"]), dict(best["model"])
        if not 1 <= best_epoch <= start:
            raise ValueError(f"best epoch {best_epoch} after epoch {start}")
        metric, wall_before = float(best["metric"]), float(state.get("wall_s", 0.0))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(f"{path}: cannot resume from it ({type(exc).__name__}: {reason}); "
                              f"expected a complete checkpoint.pt written by retrain; "
                              f"{_RESUME_REMEDY}") from None
    run.start, run.history = start, history
    run.best = {"epoch": best_epoch, "metric": metric, "model": best_model}
    run.wall_before = wall_before


def save_run(run: RunState, epoch: int) -> None:
    """Write ``checkpoint.pt`` after ``epoch`` (0-based) and the history, atomically."""
    if run.out is None or run.ckpt_path is None:
        return
    save_checkpoint(run.ckpt_path, {
        **run.meta, "epoch": epoch + 1, "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(), "rng": rng_state(),
        "history": run.history, "best": run.best, "wall_s": run.wall_s(),
    })
    write_history(run.out, run.history)


def write_history(out: Path, history: list[dict[str, Any]]) -> None:
    """``out/history.jsonl``: one JSON line per epoch (:func:`arnas_ray._loop.write_history`)."""
    _loop.write_history(out / "history.jsonl", history)
