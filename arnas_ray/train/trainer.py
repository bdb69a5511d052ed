"""Adversarial retraining of a discrete network: PGD-AT, TRADES or natural training.

:func:`retrain` trains the :class:`~arnas_ray.space.Network` of a genotype with SGD, validates
on the **held-out val split** after every epoch (natural and ``eval_attack`` accuracy), keeps
the best weights by ``select_on`` (the test split is never looked at), and writes a checkpoint
every epoch. Resuming from it is exact: the data order, the augmentation and the attacks'
random starts of an epoch are seeded from ``(seed, epoch)`` by
:func:`arnas_ray._loop.stream_seed` (streams ``train-data``, ``train-attack`` and
``val-attack``; the loader is rebuilt each epoch), and the checkpoint holds the weights, the
optimiser (momentum buffers), the epoch and the global RNG states (drop path draws from them).
The learning rate is a pure function of the epoch (:func:`learning_rate`), so no scheduler
state is stored (an old checkpoint's ``scheduler`` entry is ignored).

One epoch is three named steps: :func:`_train_epoch` (SGD over the loader, stopping on a
non-finite loss), :func:`_validate` and :func:`_end_epoch` (model selection, the history
record, the checkpoint).

Files in ``out_dir``: ``genotype.json``, ``checkpoint.pt`` (every epoch), ``history.jsonl``
(one JSON line per epoch) and ``best.pt`` (the selected weights), all written atomically.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from arnas_ray._atomic import atomic_write_text
from arnas_ray._loop import diverged, steady_gc, stream_seed
from arnas_ray.checkpoint import save_checkpoint
from arnas_ray.data import DataSplits, make_loader
from arnas_ray.space import Genotype, count_macs, count_params
from arnas_ray.train._state import RunState, build_run, resume_run, save_run, write_history
from arnas_ray.train.config import RetrainConfig
from arnas_ray.train.evaluate import accuracies
from arnas_ray.train.losses import training_loss

__all__ = ["RetrainResult", "learning_rate", "retrain"]

logger = logging.getLogger(__name__)

Callback = Callable[[dict[str, Any]], None]
_EVAL_BATCH = 256


@dataclass
class RetrainResult:
    """What :func:`retrain` returns.

    Attributes:
        best_epoch: the selected epoch (1-based). best_metric: its val ``select_on`` accuracy.
        history: one record per epoch (see :func:`retrain`).
        final: the record of the last epoch. best: the record of the selected epoch.
        best_path: ``out_dir/best.pt`` (``None`` without ``out_dir``).
        checkpoint_path: ``out_dir/checkpoint.pt`` (``None`` without ``out_dir``).
        params: trainable parameters (auxiliary head excluded). macs: per image.
        wall_s: seconds of training and validation, over all sessions of a resumed run.
        model: the network with the selected weights, in eval mode.
    """

    best_epoch: int
    best_metric: float
    history: list[dict[str, Any]]
    final: dict[str, Any]
    best: dict[str, Any]
    best_path: Path | None
    checkpoint_path: Path | None
    params: int
    macs: int
    wall_s: float
    model: nn.Module = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the model left out)."""
        return {
            "best_epoch": self.best_epoch, "best_metric": self.best_metric,
            "history": self.history, "final": self.final, "best": self.best,
            "best_path": None if self.best_path is None else str(self.best_path),
            "checkpoint_path": None if self.checkpoint_path is None else str(self.checkpoint_path),
            "params": self.params, "macs": self.macs, "wall_s": self.wall_s,
        }


def learning_rate(config: RetrainConfig, epoch: int) -> float:
    """Learning rate of epoch ``epoch`` (0-based), a pure function of the config.

    ``step``: ``lr * lr_gamma ** k`` with ``k`` the milestones reached
    (``epoch >= round(m * epochs)``); ``cosine``: ``lr * (1 + cos(pi * epoch / epochs)) / 2``.

    Example:
        >>> cfg = RetrainConfig(epochs=200)
        >>> [round(learning_rate(cfg, e), 6) for e in (0, 99, 100, 150)]
        [0.1, 0.1, 0.01, 0.001]
    """
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))
    reached = sum(epoch >= round(m * config.epochs) for m in config.milestones)
    return config.lr * config.lr_gamma ** reached


def _val_subset(data: DataSplits, limit: int | None) -> Dataset[Any]:
    val = data.val
    n = len(val)  # type: ignore[arg-type]
    if limit is None or n <= limit:
        return val
    return Subset(val, range(limit))  # the first items: the same examples every epoch


def _validate(model: nn.Module, data: DataSplits, config: RetrainConfig, device: torch.device,
              epoch: int) -> dict[str, float]:
    """Natural and ``eval_attack`` accuracy on the held-out val split, in eval mode."""
    loader = make_loader(_val_subset(data, config.val_samples),
                         max(_EVAL_BATCH, config.batch_size), shuffle=False)
    was_training = model.training
    model.eval()
    try:
        acc = accuracies(model, loader, device, {"nat": None, "pgd": config.eval_attack},
                         seed=stream_seed(config.seed, epoch, "val-attack"))
    finally:
        model.train(was_training)
    return acc


@dataclass
class _EpochStats:
    lr: float
    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int = 0
    steps: int = 0
    train_s: float = 0.0


def _step(run: RunState, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, stats: _EpochStats,
          epoch: int, step: int) -> None:
    """One SGD step on ``config.method``'s loss; raises before updating on a non-finite value."""
    config, model = run.config, run.model
    amp = (torch.autocast(run.device.type, dtype=torch.bfloat16) if config.amp == "bf16"
           else contextlib.nullcontext())
    with amp:
        res = training_loss(config.method, model, x, y, config.loss_spec(), generator=gen)
    loss = res.loss.float()
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    finite = torch.isfinite(loss)
    if config.grad_clip > 0:
        norm = nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        finite = finite & torch.isfinite(norm)
    if not bool(finite):  # one sync per step; the weights are not updated
        kept = run.ckpt_path if run.ckpt_path is not None and run.ckpt_path.exists() else None
        raise diverged(epoch=epoch + 1, step=step, lrs={"lr": stats.lr},
                       what=f"training loss ({loss.item()}) or gradient norm "
                            f"(method={config.method})",
                       checkpoint=kept, checkpoint_epoch=len(run.history))
    run.optimizer.step()
    n = int(y.shape[0])
    stats.loss_sum += loss.detach() * n
    stats.correct += (res.logits.detach().argmax(dim=1) == y).sum()
    stats.seen += n
    stats.steps += 1


def _train_epoch(run: RunState, epoch: int) -> _EpochStats:
    """One pass (at most ``steps_per_epoch`` steps) over a loader seeded for this epoch."""
    config, model, device = run.config, run.model, run.device
    stats = _EpochStats(learning_rate(config, epoch), torch.zeros((), device=device),
                        torch.zeros((), dtype=torch.long, device=device))
    for group in run.optimizer.param_groups:
        group["lr"] = stats.lr
    model.drop_path_prob = config.drop_path_prob * epoch / config.epochs
    drop_last = len(run.data.train) > config.batch_size  # type: ignore[arg-type]  # BN: no batch of 1
    loader = make_loader(run.data.train, config.batch_size, shuffle=True,
                         seed=stream_seed(config.seed, epoch, "train-data"), drop_last=drop_last,
                         num_workers=config.num_workers, pin_memory=device.type == "cuda")
    gen = torch.Generator(device=device).manual_seed(stream_seed(config.seed, epoch,
                                                                 "train-attack"))
    model.train()
    t_train = time.perf_counter()
    for step, (x, y) in enumerate(loader, start=1):
        if config.steps_per_epoch is not None and step > config.steps_per_epoch:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        _step(run, x, y, gen, stats, epoch, step)
    stats.train_s = time.perf_counter() - t_train
    return stats


def _end_epoch(run: RunState, epoch: int, stats: _EpochStats, val: dict[str, float],
               t_epoch: float) -> dict[str, Any]:
    """Select on the val metric, append the epoch's record, write the checkpoint."""
    config, model = run.config, run.model
    metric = val["pgd"] if config.select_on == "pgd" else val["nat"]
    if run.best is None or metric > run.best["metric"]:
        run.best = {"epoch": epoch + 1, "metric": metric,
                    "model": {k: v.detach().to("cpu", copy=True)
                              for k, v in model.state_dict().items()}}
    seen = max(stats.seen, 1)
    record = {
        "epoch": epoch + 1, "epochs": config.epochs,
        "train_loss": stats.loss_sum.item() / seen, "train_acc": stats.correct.item() / seen,
        "val_nat_acc": val["nat"], "val_pgd_acc": val["pgd"], "lr": stats.lr,
        "drop_path_prob": model.drop_path_prob, "steps": stats.steps,
        "wall_s": time.perf_counter() - t_epoch,
        "images_per_s": stats.seen / stats.train_s if stats.train_s > 0 else 0.0,
        "best_epoch": run.best["epoch"],
    }
    run.history.append(record)
    logger.info("epoch %d/%d: %s", epoch + 1, config.epochs, record)
    save_run(run, epoch)
    return record


def _finish(run: RunState) -> RetrainResult:
    """Load the selected weights, write ``best.pt``, and describe the run."""
    best, history, model = run.best, run.history, run.model
    assert best is not None  # epochs >= 1, so at least one epoch ran or was restored
    model.load_state_dict(best["model"])
    model.eval()
    best_path = None
    if run.out is not None:
        best_path = run.out / "best.pt"
        save_checkpoint(best_path, {**run.meta, "epoch": best["epoch"], "metric": best["metric"],
                                    "model": best["model"], "metrics": history[best["epoch"] - 1]})
        write_history(run.out, history)
    data = run.data
    return RetrainResult(
        best_epoch=int(best["epoch"]), best_metric=float(best["metric"]), history=history,
        final=history[-1], best=history[best["epoch"] - 1], best_path=best_path,
        checkpoint_path=run.ckpt_path, params=count_params(model),
        macs=count_macs(model, data.image_size, data.channels, run.device),
        wall_s=run.wall_s(), model=model,
    )


def retrain(
    genotype: Genotype | str,
    config: RetrainConfig,
    data: DataSplits,
    device: torch.device | str,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    callback: Callback | None = None,
    resume: bool = True,
) -> RetrainResult:
    """Train the network of ``genotype`` with ``config`` on ``data``; select on the val split.

    Per epoch (0-based ``e``): learning rate :func:`learning_rate`, drop path
    ``drop_path_prob * e / epochs`` (DARTS), a loader seeded with
    ``stream_seed(seed, e, "train-data")``, one pass (at most ``steps_per_epoch`` steps) of SGD
    on ``config.method``'s loss with gradient clipping, then validation on ``data.val`` (at most
    ``val_samples`` examples): natural and ``eval_attack`` accuracy. The global torch RNG is seeded with ``seed`` inside
    ``torch.random.fork_rng``, so the caller's RNG state is left as it was.

    Args:
        genotype: a :class:`Genotype` or a name / JSON path for :meth:`Genotype.resolve`.
        config: the recipe.
        data: the splits, loaded with ``cutout=config.cutout``; ``data.test`` is never used.
        device: where to train.
        out_dir: folder for the checkpoint, history, genotype and best weights (``None``:
            keep everything in memory).
        callback: called after each epoch (after the checkpoint is written) with ``epoch``
            (1-based), ``epochs``, ``train_loss``, ``train_acc``, ``val_nat_acc``,
            ``val_pgd_acc``, ``lr``, ``wall_s`` (of the epoch), ``images_per_s``,
            ``best_epoch``. An exception it raises stops the run; the checkpoint stays.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists.

    Returns:
        The :class:`RetrainResult`, with the selected weights loaded in ``result.model``.

    Raises:
        DivergenceError: a non-finite loss or gradient norm; names the epoch and the step
            (1-based); the previous epoch's checkpoint stays on disk.
        CheckpointError: the checkpoint to resume from is truncated, unsafe, or was written
            by a different run (another genotype, data shape or config); the message starts
            with the file.

    Example:
        >>> from arnas_ray.data import load_dataset
        >>> cfg = RetrainConfig(channels=4, cells=3, epochs=1, steps_per_epoch=2, cutout=0)
        >>> data = load_dataset("synthetic", image_size=8, cutout=cfg.cutout)  # doctest: +SKIP
        >>> res = retrain("ARNAS", cfg, data, "cpu")  # doctest: +SKIP
    """
    if isinstance(genotype, str):
        genotype = Genotype.resolve(genotype)
    device = torch.device(device)
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(config.seed)
        return _retrain(genotype, config, data, device, out_dir, callback, resume)


def _retrain(genotype: Genotype, config: RetrainConfig, data: DataSplits, device: torch.device,
             out_dir: str | os.PathLike[str] | None, callback: Callback | None,
             resume: bool) -> RetrainResult:
    run = build_run(genotype, config, data, device, out_dir)
    if run.ckpt_path is not None and resume and run.ckpt_path.exists():
        resume_run(run, run.ckpt_path)
    elif run.out is not None:
        atomic_write_text(run.out / "genotype.json", genotype.to_json(indent=2) + "\n")
    for epoch in range(run.start, config.epochs):
        t_epoch = time.perf_counter()
        with steady_gc():
            stats = _train_epoch(run, epoch)
        val = _validate(run.model, data, config, device, epoch)
        record = _end_epoch(run, epoch, stats, val, t_epoch)
        if callback is not None:
            callback(dict(record))
    return _finish(run)
