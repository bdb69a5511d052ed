"""``run_search``: the ARNAS search epochs, with per-epoch callback, checkpoint and resume.

Per step, as the reference does: PGD-7 on the training batch and on a validation batch (model
in train mode); an architecture step (natural objective on the clean validation batch,
adversarial objective on its PGD version); a weight step on the adversarial training batch
with gradient clipping. SGD with a cosine schedule for the weights, Adam for the alphas. The
training split is divided by ``train_portion``: one part trains weights, the other drives the
architecture. Accuracies reported each epoch come from the held-out ``val`` split, which the
search never trains on.

The per-epoch metrics and the per-step records are listed in :mod:`arnas_ray.search.result`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from arnas_ray._atomic import atomic_write_text
from arnas_ray._diagnostics import edges_changed, search_degeneracy, summarize_steps
from arnas_ray._loop import check_resumable, diverged, steady_gc, stream_seed
from arnas_ray.attacks import AttackSpec, frozen_parameters, pgd, pgd_groups
from arnas_ray.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from arnas_ray.data import DataSplits, make_loader
from arnas_ray.device import keep_heap
from arnas_ray.errors import DivergenceError, SpecError
from arnas_ray.search._amp import autocast_factory
from arnas_ray.search._amp import upcast as _upcast
from arnas_ray.search._evaluate import split_indices, supernet_accuracy
from arnas_ray.search.architect import ArchBatch, Architect
from arnas_ray.search.config import SearchConfig
from arnas_ray.search.diagnostics import EpochDiagnostics, op_entropy
from arnas_ray.search.result import SearchResult
from arnas_ray.space import Network, Supernet, count_macs, count_params, reused_reps

__all__ = [
    "CHECKPOINT_NAME",
    "STEPS_NAME",
    "SearchParts",
    "SearchResult",
    "StepOutput",
    "build_search",
    "build_supernet",
    "run_search",
    "search_step",
    "supernet_accuracy",
]

logger = logging.getLogger(__name__)
CHECKPOINT_NAME = "search.pt"
STEPS_NAME = "steps.jsonl"  # the per-step records, one JSON line each, beside the checkpoint
Callback = Callable[[dict[str, Any]], None]
StepCallback = Callable[[int, int, int], None]


def build_supernet(config: SearchConfig, num_classes: int, in_channels: int = 3) -> Supernet:
    return Supernet(config.layout(), config.width(), num_classes, config.cells,
                    primitives=config.primitive_names(), in_channels=in_channels, fused=config.fused)


@dataclass
class SearchParts:
    """The stateful pieces of one search: supernet, architect and the weight optimiser."""

    config: SearchConfig
    model: Supernet
    fwd: Callable[[torch.Tensor], torch.Tensor]  # the model, compiled when config.compile
    architect: Architect
    w_opt: torch.optim.SGD
    sched: torch.optim.lr_scheduler.CosineAnnealingLR
    autocast: Callable[[], Any] | None


@dataclass
class StepOutput:
    """0-d tensors of one search step (no host sync was made)."""

    gamma: torch.Tensor
    loss: torch.Tensor  # the weight step's loss on the adversarial training batch
    finite: torch.Tensor  # bool: every loss and gradient norm of the step is finite


def build_search(config: SearchConfig, num_classes: int, in_channels: int,
                 device: torch.device | str) -> SearchParts:
    """Seed, build the supernet (``channels_last`` when asked), the architect, SGD and cosine
    (on CPU, with this process's heap kept: :func:`arnas_ray.device.keep_heap`)."""
    device = torch.device(device)
    if device.type == "cpu":
        keep_heap()
    torch.manual_seed(config.seed)
    model = build_supernet(config, num_classes, in_channels).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    autocast = autocast_factory(config.amp, device)
    architect = Architect(
        model, order=config.order, strategy=config.strategy, adv_coef=config.adv_coef,
        fixed_weights=config.fixed_weights, normalization=config.normalization, lr=config.arch_lr,
        betas=config.arch_betas, weight_decay=config.arch_weight_decay, w_momentum=config.momentum,
        w_weight_decay=config.weight_decay, autocast=autocast, fd_radius=config.fd_radius,
        diagnostics=config.diagnostics,
    )
    # foreach: one call per operation for all ~900 tensors (PyTorch leaves it off on CPU);
    # the same arithmetic, bit for bit
    w_opt = torch.optim.SGD(architect.weights, lr=config.lr, momentum=config.momentum,
                            weight_decay=config.weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=config.epochs, eta_min=config.lr_min)
    fwd = torch.compile(model) if config.compile else model
    return SearchParts(config, model, fwd, architect, w_opt, sched, autocast)



def _pairable(parts: SearchParts, x_tr: torch.Tensor, x_val: torch.Tensor) -> bool:
    """Whether the two PGD attacks can share passes (``SearchConfig.pair_attacks``)."""
    c, m = parts.config, parts.model
    return (c.pair_attacks and not c.compile and c.attack.restarts == 1 and m.training
            and x_tr.shape == x_val.shape and all(cell.fused for cell in m.cells))


def search_step(parts: SearchParts, x_tr: torch.Tensor, y_tr: torch.Tensor, x_val: torch.Tensor,
                y_val: torch.Tensor, *, eta: float, strategy: str,
                generator: torch.Generator | None) -> StepOutput:
    """One ARNAS search step (model in train mode): PGD on the training and the validation
    batch, the architecture step, then the weight step on the adversarial training batch."""
    config, model, architect, w_opt = parts.config, parts.model, parts.architect, parts.w_opt
    weights = architect.weights
    ctx = parts.autocast if parts.autocast is not None else contextlib.nullcontext
    if config.channels_last:
        x_tr = x_tr.contiguous(memory_format=torch.channels_last)
        x_val = x_val.contiguous(memory_format=torch.channels_last)
    need_adv = architect.objectives(strategy)[1]
    x_val_adv: torch.Tensor | None
    # PGD asks for input gradients only; its passes share the repeated frozen weights
    with frozen_parameters(list(model.parameters())), reused_reps(), ctx():
        if need_adv and _pairable(parts, x_tr, x_val):  # both attacks in one pass per PGD step
            x_tr_adv, x_val_adv = pgd_groups(model.forward_groups, [x_tr, x_val], [y_tr, y_val], config.attack,
                                             generator=generator)
        else:
            x_tr_adv = pgd(parts.fwd, x_tr, y_tr, config.attack, generator=generator)
            x_val_adv = (pgd(parts.fwd, x_val, y_val, config.attack, generator=generator)
                         if need_adv else None)
    stats = architect.step(ArchBatch(x_tr_adv, y_tr, x_val, y_val, x_val_adv), eta=eta,
                           w_optimizer=w_opt, strategy=strategy)
    # weight step on the adversarial training batch (weight gradients only)
    with ctx():
        logits = parts.fwd(x_tr_adv)
    loss = F.cross_entropy(_upcast(logits), y_tr)
    grads = torch.autograd.grad(loss, weights, allow_unused=True, materialize_grads=True)
    for p, g in zip(weights, grads):
        p.grad = g
    norm = torch.nn.utils.clip_grad_norm_(weights, config.grad_clip) if config.grad_clip > 0 else \
        torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(grads))))
    w_opt.step()
    w_opt.zero_grad(set_to_none=True)
    finite = torch.isfinite(loss.detach()) & torch.isfinite(norm) & torch.isfinite(stats.grad_norm)
    for lo in (stats.loss_nat, stats.loss_adv):
        if lo is not None:
            finite = finite & torch.isfinite(lo)
    return StepOutput(gamma=stats.gamma, loss=loss.detach(), finite=finite)


def _with_defaults(saved: Any) -> Any:
    """A checkpoint's config, where a field added since it was written counts with its default."""
    if not isinstance(saved, dict):
        return saved
    return {**{k: v for k, v in SearchConfig().to_dict().items() if k not in saved}, **saved}


@dataclass
class _Run:
    """One search across its epochs: the parts, the splits, and what has been recorded."""

    config: SearchConfig
    data: DataSplits
    parts: SearchParts
    ckpt_path: Path | None
    train_idx: list[int]
    arch_idx: list[int]
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    genotype: str = ""  # JSON of the genotype at the end of the last recorded epoch (or the start)

    @property
    def device(self) -> torch.device:
        return next(self.parts.model.parameters()).device


def _start(config: SearchConfig, data: DataSplits, device: torch.device,
           checkpoint_dir: str | Path | None) -> _Run:
    """Build the search and, when ``checkpoint_dir`` holds one, resume from its checkpoint."""
    parts = build_search(config, data.num_classes, data.channels, device)
    train_idx, arch_idx = split_indices(len(data.train), config.train_portion, config.seed)  # type: ignore[arg-type]
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    run = _Run(config, data, parts, ckpt_path, train_idx, arch_idx, genotype=parts.model.genotype().to_json())
    if ckpt_path is None or not ckpt_path.exists():
        return run
    state = load_checkpoint(ckpt_path, map_location=device)
    check_resumable(_with_defaults(state.get("config")), config.to_dict(), path=ckpt_path,
                    remedy="use another checkpoint directory, or delete it to start over")
    parts.model.load_state_dict(state["model"])
    parts.w_opt.load_state_dict(state["w_opt"])
    parts.architect.optimizer.load_state_dict(state["a_opt"])
    parts.sched.load_state_dict(state["sched"])
    set_rng_state(state["rng"])
    run.history, run.steps = list(state["history"]), list(state.get("steps", []))
    run.start_epoch = int(state["epoch"]) + 1
    if run.history:
        run.genotype = run.history[-1]["genotype"]
    logger.info("resumed search from %s at epoch %d", ckpt_path, run.start_epoch)
    return run


@dataclass
class _EpochSteps:
    """What the search steps of one epoch produced (host values)."""

    strategy: str
    eta: float
    steps: int
    loss_sum: float
    search_s: float
    records: list[dict[str, Any]]


def _diverged(run: _Run, epoch: int, step: int, eta: float, what: str = "loss or gradient") -> DivergenceError:
    p = run.ckpt_path
    kept = p if p is not None and p.exists() else None
    return diverged(epoch=epoch + 1, step=step, what=f"{what} in the search",
                    lrs={"lr": eta, "arch_lr": run.config.arch_lr}, checkpoint=kept,
                    checkpoint_epoch=epoch if kept is not None else None)


def _search_epoch(run: _Run, epoch: int, on_step: StepCallback | None) -> _EpochSteps:
    """The search steps of ``epoch`` (0-based); divergence is checked every step on CPU and
    every 25 steps elsewhere (one host sync per check)."""
    config, parts, device = run.config, run.parts, run.device
    eta = parts.w_opt.param_groups[0]["lr"]
    strategy = "adversarial" if epoch < config.warmup_adv_epochs else config.strategy
    # data order and attack starts depend only on (seed, epoch, stream): resume is exact
    loaders = [make_loader(Subset(run.data.train, idx), config.batch_size, shuffle=True, drop_last=True,
                           seed=stream_seed(config.seed, epoch, name))
               for name, idx in (("weight-data", run.train_idx), ("arch-data", run.arch_idx))]
    gen = torch.Generator(device="cpu").manual_seed(stream_seed(config.seed, epoch, "attack"))
    steps = min(len(loaders[0]), len(loaders[1]), config.steps_per_epoch or len(loaders[0]))
    if steps == 0:
        raise SpecError("batch_size", f"batch_size={config.batch_size} leaves no full batch in a split of "
                                      f"{min(len(run.train_idx), len(run.arch_idx))} items")
    diag = EpochDiagnostics(epoch + 1, strategy)
    loss_sum = torch.zeros((), device=device)
    bad = torch.zeros((), dtype=torch.bool, device=device)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    check_every = 1 if device.type == "cpu" else 25
    parts.model.train()
    t_search = time.perf_counter()
    for step, ((x_tr, y_tr), (x_val, y_val)) in enumerate(zip(*loaders)):
        if step >= steps:
            break
        parts.architect.last_stats = None
        out = search_step(parts, x_tr.to(device, non_blocking=True), y_tr.to(device, non_blocking=True),
                          x_val.to(device, non_blocking=True), y_val.to(device, non_blocking=True),
                          eta=eta, strategy=strategy, generator=gen)
        last = parts.architect.last_stats
        diag.add(last.diagnostics if last is not None else None, out.gamma)
        loss_sum += out.loss
        first_bad = torch.where(~out.finite & ~bad, torch.full_like(first_bad, step), first_bad)
        bad = bad | ~out.finite
        if ((step + 1) % check_every == 0 or step + 1 == steps) and bool(bad):
            raise _diverged(run, epoch, int(first_bad), eta)
        if on_step is not None:
            on_step(epoch + 1, step, steps)
    search_s = time.perf_counter() - t_search
    return _EpochSteps(strategy, eta, steps, float(loss_sum), search_s, diag.records())


def _epoch_metrics(run: _Run, epoch: int, ep: _EpochSteps, t_epoch: float) -> dict[str, Any]:
    """The epoch's metrics (:mod:`arnas_ray.search.result`), after the cosine step and the evaluation."""
    config, model = run.config, run.parts.model
    run.parts.sched.step()
    for name, a in model.arch_parameters().items():
        if not bool(torch.isfinite(a).all()):
            raise _diverged(run, epoch, ep.steps - 1, ep.eta, what=f"architecture parameters {name!r}")
    eval_attack = AttackSpec(kind="pgd", eps=config.attack.eps, alpha=config.attack.alpha,
                             steps=config.eval_attack_steps, random_start=True, clip=config.attack.clip)
    nat_acc, pgd_acc = supernet_accuracy(model, run.data.val, run.device, attack=eval_attack,
                                         samples=config.eval_samples, seed=config.seed)
    genotype = model.genotype().to_json()
    summary = summarize_steps(ep.records)
    metrics: dict[str, Any] = {
        "epoch": epoch + 1, "nat_acc": nat_acc, "pgd_acc": pgd_acc, "train_loss": ep.loss_sum / ep.steps,
        "gamma_mean": summary["gamma_mean"], "gamma_last": ep.records[-1]["gamma"], "genotype": genotype,
        "strategy_used": ep.strategy, "lr": ep.eta, "steps": ep.steps, "search_s": ep.search_s,
        "epoch_s": time.perf_counter() - t_epoch, "images_per_s": ep.steps * config.batch_size / ep.search_s,
        **summary, "genotype_changes": edges_changed(run.genotype, genotype),
        **op_entropy(model.arch_parameters()),
    }
    metrics["degeneracy"] = search_degeneracy([*run.history, metrics], normalization=config.normalization) or ""
    return metrics


def _record(run: _Run, epoch: int, metrics: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Append the epoch to the history, then write the checkpoint and ``steps.jsonl``."""
    run.history.append(metrics)
    run.steps.extend(records)
    run.genotype = metrics["genotype"]
    if run.ckpt_path is None:
        return
    p = run.parts
    save_checkpoint(run.ckpt_path, {
        "model": p.model.state_dict(), "w_opt": p.w_opt.state_dict(), "a_opt": p.architect.optimizer.state_dict(),
        "sched": p.sched.state_dict(), "rng": rng_state(), "epoch": epoch, "history": run.history,
        "steps": run.steps, "config": run.config.to_dict(),
    })
    atomic_write_text(run.ckpt_path.parent / STEPS_NAME, "".join(json.dumps(r) + "\n" for r in run.steps))


def _result(run: _Run, t_start: float) -> SearchResult:
    config, data, model = run.config, run.data, run.parts.model
    genotype = model.genotype()
    final = run.history[-1] if run.history else {"nat_acc": float("nan"), "pgd_acc": float("nan")}
    derived = Network(genotype, config.layout(), config.width(), data.num_classes, config.cells,
                      in_channels=data.channels)
    warning = search_degeneracy(run.history, normalization=config.normalization)
    if warning is not None:
        logger.warning("degenerate MGDA search (normalization=%r, adv_coef=%g): %s", config.normalization,
                       config.adv_coef, warning)
    return SearchResult(
        genotype=genotype, alphas={k: v.detach().cpu().tolist() for k, v in model.arch_parameters().items()},
        history=run.history, nat_acc=float(final["nat_acc"]), pgd_acc=float(final["pgd_acc"]),
        params=count_params(derived), macs=count_macs(derived, data.image_size, data.channels),
        wall_s=time.perf_counter() - t_start, epochs=len(run.history), steps=run.steps, degeneracy=warning,
    )


def run_search(config: SearchConfig, data: DataSplits, device: torch.device | str = "cpu", *,
               callback: Callback | None = None, checkpoint_dir: str | Path | None = None,
               on_step: StepCallback | None = None) -> SearchResult:
    """Run one ARNAS search; no Ray needed (the Tune trainable wraps this).

    Args:
        config: the search settings.
        data: the data set splits (``train`` is split by ``train_portion``; ``val`` is held out
            and only used for the per-epoch accuracies).
        device: where to run.
        callback: called after every epoch (after its checkpoint is written) with a copy of the
            epoch's metrics (plain values; :mod:`arnas_ray.search.result` lists them).
        checkpoint_dir: if given, ``search.pt`` (with the per-epoch history and the per-step
            records) and ``steps.jsonl`` are written there atomically after every epoch; an
            existing checkpoint is resumed from (the run continues where it stopped and, on
            CPU, reproduces the uninterrupted run exactly).
        on_step: called after every search step with ``(epoch, step, steps)`` (1-based epoch,
            0-based step), e.g. for a progress bar.

    Returns:
        The :class:`SearchResult`; a degenerate MGDA weighting is logged as a warning.

    Raises:
        DivergenceError: a loss or gradient norm became non-finite (names the 1-based epoch
            and the 0-based step); the previous epoch's checkpoint is kept.
        CheckpointError: an existing checkpoint is corrupt or belongs to another config.
        SpecError: a split leaves no full batch.

    Example:
        >>> from arnas_ray.data import load_dataset
        >>> data = load_dataset("synthetic", image_size=8, num_train=40, num_test=8)
        >>> cfg = SearchConfig(channels=4, cells=4, epochs=1, batch_size=4, steps_per_epoch=1,
        ...                    eval_samples=4, eval_attack_steps=1)
        >>> result = run_search(cfg, data, "cpu")
        >>> len(result.history), len(result.steps)
        (1, 1)
    """
    t_start = time.perf_counter()
    run = _start(config, data, torch.device(device), checkpoint_dir)
    for epoch in range(run.start_epoch, config.epochs):
        t_epoch = time.perf_counter()
        with steady_gc():
            ep = _search_epoch(run, epoch, on_step)
        metrics = _epoch_metrics(run, epoch, ep, t_epoch)
        _record(run, epoch, metrics, ep.records)
        if callback is not None:
            callback(dict(metrics))
    return _result(run, t_start)
