"""Adversarial retraining of a discrete network: PGD-AT, TRADES or natural training.

:func:`retrain` trains the :class:`~arnas_ray.space.Network` of a genotype with SGD, validates
on the **held-out val split** after every epoch (natural and ``eval_attack`` accuracy), keeps
the best weights by ``select_on`` (the test split is never looked at), and writes a checkpoint
every epoch. Resuming from it is exact: the data order, the augmentation and the attacks'
random starts of an epoch are seeded from ``(seed, epoch)`` (the loader is rebuilt each
epoch), and the checkpoint holds the weights, the optimiser (momentum buffers), the schedule
position and the global RNG states (drop path draws from them).

Files in ``out_dir``: ``genotype.json``, ``checkpoint.pt`` (every epoch), ``history.jsonl``
(one JSON line per epoch) and ``best.pt`` (the selected weights), all written atomically.
"""

from __future__ import annotations

import contextlib
import json
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
from arnas_ray._config import to_dict
from arnas_ray.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from arnas_ray.data import DataSplits, make_loader
from arnas_ray.errors import CheckpointError, DivergenceError
from arnas_ray.space import Genotype, count_macs, count_params
from arnas_ray.train._model import FORMAT, build_network, metadata
from arnas_ray.train.config import RetrainConfig
from arnas_ray.train.evaluate import accuracies
from arnas_ray.train.losses import training_loss

__all__ = ["RetrainResult", "learning_rate", "retrain"]

logger = logging.getLogger(__name__)

Callback = Callable[[dict[str, Any]], None]
#: Config fields that may differ between a run and its resumption (they do not change the math).
_RESUME_FREE = ("num_workers",)
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


def _seed(config: RetrainConfig, epoch: int, stream: int) -> int:
    """Seed of one random stream of one epoch: 0 data order, 1 training attacks, 2 validation."""
    return config.seed * 1000 + epoch + stream * 2**40


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
                         seed=_seed(config, epoch, 2))
    finally:
        model.train(was_training)
    return acc


def _check_resumable(state: dict[str, Any], genotype: Genotype, config: RetrainConfig,
                     meta: dict[str, Any], path: Path) -> None:
    if state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} has format {state.get('format')!r}, "
                              f"expected {FORMAT!r}")
    if Genotype.from_json(state["genotype"]) != genotype:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written for another genotype; pass resume=False or "
            "use another out_dir"
        )
    for key in ("dataset", "num_classes", "in_channels", "image_size"):
        if state.get(key) != meta[key]:
            raise CheckpointError(
                f"checkpoint {str(path)!r} was written for {key}={state.get(key)!r}, but this run "
                f"has {key}={meta[key]!r}; pass resume=False or use another out_dir"
            )
    old, new = state["config"], to_dict(config)
    for key in sorted(set(old) | set(new)):
        if key not in _RESUME_FREE and old.get(key) != new.get(key):
            raise CheckpointError(
                f"checkpoint {str(path)!r} was written with {key}={old.get(key)!r}, but this run "
                f"has {key}={new.get(key)!r}; pass resume=False or use another out_dir"
            )


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(out / "history.jsonl", "".join(json.dumps(r) + "\n" for r in history))


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
    ``drop_path_prob * e / epochs`` (DARTS), a loader seeded with ``seed * 1000 + e``, one pass
    (at most ``steps_per_epoch`` steps) of SGD on ``config.method``'s loss with gradient
    clipping, then validation on ``data.val`` (at most ``val_samples`` examples): natural and
    ``eval_attack`` accuracy. The global torch RNG is seeded with ``seed`` inside
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
            by a different run (another genotype or config).

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
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "checkpoint.pt" if out is not None else None
    meta = metadata(genotype, config, num_classes=data.num_classes, in_channels=data.channels,
                    image_size=data.image_size, dataset=data.name)
    model = build_network(genotype, config, data.num_classes, data.channels).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = count_params(model)
    macs = count_macs(model, data.image_size, data.channels, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start = 0
    wall_before = 0.0
    if ckpt_path is not None and resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        _check_resumable(state, genotype, config, meta, ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start, history, best = int(state["epoch"]), list(state["history"]), state["best"]
        wall_before = float(state.get("wall_s", 0.0))
        logger.info("resuming %s after epoch %d of %d", ckpt_path, start, config.epochs)
    elif out is not None:
        atomic_write_text(out / "genotype.json", genotype.to_json(indent=2) + "\n")

    train_size = len(data.train)  # type: ignore[arg-type]
    drop_last = train_size > config.batch_size  # a batch of 1 breaks BN in the auxiliary head
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if config.amp == "bf16"
           else contextlib.nullcontext())
    aux_weight = config.auxiliary_weight if config.auxiliary else 0.0
    t_session = time.perf_counter()
    for epoch in range(start, config.epochs):
        t_epoch = time.perf_counter()
        lr = learning_rate(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.drop_path_prob = config.drop_path_prob * epoch / config.epochs
        loader = make_loader(data.train, config.batch_size, shuffle=True,
                             seed=_seed(config, epoch, 0), drop_last=drop_last,
                             num_workers=config.num_workers, pin_memory=device.type == "cuda")
        gen = torch.Generator(device=device).manual_seed(_seed(config, epoch, 1))
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen, steps = 0, 0
        t_train = time.perf_counter()
        for step, (x, y) in enumerate(loader, start=1):
            if config.steps_per_epoch is not None and step > config.steps_per_epoch:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp:
                res = training_loss(config.method, model, x, y, spec=config.attack,
                                    beta=config.trades_beta, auxiliary_weight=aux_weight,
                                    craft_mode=config.craft_mode, generator=gen)
            loss = res.loss.float()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            finite = torch.isfinite(loss)
            if config.grad_clip > 0:
                norm = nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                finite = finite & torch.isfinite(norm)
            if not bool(finite):  # one sync per step; the weights are not updated
                kept = (f"the last good checkpoint {str(ckpt_path)!r} (epoch {len(history)}) "
                        "is kept" if ckpt_path is not None and ckpt_path.exists()
                        else "no checkpoint had been written yet")
                raise DivergenceError(
                    f"non-finite training loss ({loss.item()}) or gradient at epoch {epoch + 1}, "
                    f"step {step} (method={config.method}, lr={lr}); {kept}",
                    epoch=epoch + 1, step=step,
                )
            optimizer.step()
            n = int(y.shape[0])
            loss_sum += loss.detach() * n
            correct += (res.logits.detach().argmax(dim=1) == y).sum()
            seen += n
            steps += 1
        train_s = time.perf_counter() - t_train
        val = _validate(model, data, config, device, epoch)
        metric = val["pgd"] if config.select_on == "pgd" else val["nat"]
        if best is None or metric > best["metric"]:
            best = {"epoch": epoch + 1, "metric": metric,
                    "model": {k: v.detach().to("cpu", copy=True)
                              for k, v in model.state_dict().items()}}
        record = {
            "epoch": epoch + 1,
            "epochs": config.epochs,
            "train_loss": loss_sum.item() / max(seen, 1),
            "train_acc": correct.item() / max(seen, 1),
            "val_nat_acc": val["nat"],
            "val_pgd_acc": val["pgd"],
            "lr": lr,
            "drop_path_prob": model.drop_path_prob,
            "steps": steps,
            "wall_s": time.perf_counter() - t_epoch,
            "images_per_s": seen / train_s if train_s > 0 else 0.0,
            "best_epoch": best["epoch"],
        }
        history.append(record)
        logger.info("epoch %d/%d: %s", epoch + 1, config.epochs, record)
        if out is not None and ckpt_path is not None:
            save_checkpoint(ckpt_path, {
                **meta,
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": {"schedule": config.schedule, "epoch": epoch + 1,
                              "lr": learning_rate(config, min(epoch + 1, config.epochs - 1))},
                "rng": rng_state(),
                "history": history,
                "best": best,
                "wall_s": wall_before + time.perf_counter() - t_session,
            })
            _write_history(out, history)
        if callback is not None:
            callback(dict(record))

    assert best is not None  # epochs >= 1, so at least one epoch ran or was restored
    model.load_state_dict(best["model"])
    model.eval()
    best_path = None
    if out is not None:
        best_path = out / "best.pt"
        save_checkpoint(best_path, {**meta, "epoch": best["epoch"], "metric": best["metric"],
                                    "model": best["model"],
                                    "metrics": history[best["epoch"] - 1]})
        _write_history(out, history)
    return RetrainResult(
        best_epoch=int(best["epoch"]), best_metric=float(best["metric"]), history=history,
        final=history[-1], best=history[best["epoch"] - 1], best_path=best_path,
        checkpoint_path=ckpt_path, params=params, macs=macs,
        wall_s=wall_before + time.perf_counter() - t_session, model=model,
    )
