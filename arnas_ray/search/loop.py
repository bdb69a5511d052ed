"""``run_search``: the ARNAS search epochs, with per-epoch callback, checkpoint and resume.

Per step, as the reference does: PGD-7 on the training batch and on a validation batch (model
in train mode); an architecture step (natural objective on the clean validation batch,
adversarial objective on its PGD version); a weight step on the adversarial training batch
with gradient clipping. SGD with a cosine schedule for the weights, Adam for the alphas. The
training split is divided by ``train_portion``: one part trains weights, the other drives the
architecture. Accuracies reported each epoch come from the held-out ``val`` split, which the
search never trains on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from arnas_ray.attacks import AttackSpec, frozen_parameters, pgd, pgd_groups
from arnas_ray.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from arnas_ray.data import DataSplits, make_loader
from arnas_ray.errors import CheckpointError, DivergenceError, SpecError
from arnas_ray.search.architect import ArchBatch, Architect
from arnas_ray.search.config import SearchConfig
from arnas_ray.space import Genotype, Network, Supernet, count_macs, count_params

__all__ = [
    "CHECKPOINT_NAME",
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
Callback = Callable[[dict[str, Any]], None]
StepCallback = Callable[[int, int, int], None]


@dataclass
class SearchResult:
    """What one search produced."""

    genotype: Genotype
    alphas: dict[str, list[list[float]]]
    history: list[dict[str, Any]]
    nat_acc: float
    pgd_acc: float
    params: int
    macs: int
    wall_s: float
    epochs: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "genotype": self.genotype.to_dict(), "alphas": self.alphas, "history": self.history,
            "nat_acc": self.nat_acc, "pgd_acc": self.pgd_acc, "params": self.params, "macs": self.macs,
            "wall_s": self.wall_s, "epochs": self.epochs, **self.extra,
        }


def build_supernet(config: SearchConfig, num_classes: int, in_channels: int = 3) -> Supernet:
    return Supernet(config.layout(), config.width(), num_classes, config.cells,
                    primitives=config.primitive_names(), in_channels=in_channels, fused=config.fused)


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _autocast_factory(config: SearchConfig, device: torch.device):
    if config.amp == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return None


@torch.no_grad()
def _entropy(alpha: torch.Tensor) -> float:
    p = torch.softmax(alpha.float(), dim=-1)
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean())


def supernet_accuracy(model: torch.nn.Module, dataset, device: torch.device, *, attack: AttackSpec | None,
                      samples: int, batch_size: int = 256, seed: int = 0) -> tuple[float, float]:
    """Natural and PGD accuracy of ``model`` (eval mode) on the first ``samples`` items."""
    n = min(samples, len(dataset))
    loader = make_loader(Subset(dataset, range(n)), batch_size, shuffle=False, seed=seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    was = model.training
    model.eval()
    correct = torch.zeros(2, dtype=torch.long, device=device)
    try:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                correct[0] += (model(x).argmax(1) == y).sum()
            if attack is not None and attack.steps > 0:
                x_adv = pgd(model, x, y, attack, generator=gen)
                with torch.no_grad():
                    correct[1] += (model(x_adv).argmax(1) == y).sum()
    finally:
        model.train(was)
    c = correct.tolist()
    return c[0] / max(n, 1), (c[1] / max(n, 1)) if attack is not None and attack.steps > 0 else float("nan")


def _split(n: int, portion: float, seed: int) -> tuple[list[int], list[int]]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = int(math.floor(portion * n))
    if cut < 1 or cut >= n:
        raise SpecError("train_portion", f"splits {n} training items into {cut} and {n - cut}; both must be >= 1")
    return perm[:cut], perm[cut:]


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
    """Seed, build the supernet (``channels_last`` when asked), the architect, SGD and cosine."""
    device = torch.device(device)
    torch.manual_seed(config.seed)
    model = build_supernet(config, num_classes, in_channels).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    autocast = _autocast_factory(config, device)
    architect = Architect(
        model, order=config.order, strategy=config.strategy, adv_coef=config.adv_coef,
        fixed_weights=config.fixed_weights, normalization=config.normalization, lr=config.arch_lr,
        betas=config.arch_betas, weight_decay=config.arch_weight_decay, w_momentum=config.momentum,
        w_weight_decay=config.weight_decay, autocast=autocast,
    )
    w_opt = torch.optim.SGD(architect.weights, lr=config.lr, momentum=config.momentum,
                            weight_decay=config.weight_decay)
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
    with frozen_parameters(model.parameters()), ctx():  # PGD asks for input gradients only
        if need_adv and _pairable(parts, x_tr, x_val):  # both attacks in one pass per PGD step
            x_tr_adv, x_val_adv = pgd_groups(model.forward_groups, [x_tr, x_val], [y_tr, y_val], config.attack,
                                             generator=generator)
        else:
            x_tr_adv = pgd(parts.fwd, x_tr, y_tr, config.attack, generator=generator)
            x_val_adv = pgd(parts.fwd, x_val, y_val, config.attack, generator=generator) if need_adv else None
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


def _config_diff(saved: Any, current: dict[str, Any]) -> list[str]:
    if not isinstance(saved, dict):
        return ["<config>"]
    return sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))


def run_search(config: SearchConfig, data: DataSplits, device: torch.device | str = "cpu", *,
               callback: Callback | None = None, checkpoint_dir: str | Path | None = None,
               on_step: StepCallback | None = None) -> SearchResult:
    """Run one ARNAS search; no Ray needed (the Tune trainable wraps this).

    Args:
        config: the search settings.
        data: the data set splits (``train`` is split by ``train_portion``; ``val`` is held out
            and only used for the per-epoch accuracies).
        device: where to run.
        callback: called after every epoch (after its checkpoint is written) with a dict of
            plain values: ``epoch`` (1-based), ``nat_acc`` and ``pgd_acc`` (supernet in eval
            mode on the first ``eval_samples`` items of ``data.val``, PGD with
            ``eval_attack_steps`` steps), ``gamma_mean``, ``gamma_last`` (weight of the natural
            objective), ``genotype`` (JSON), ``entropy_<cell type>`` (mean alpha entropy, nats),
            ``train_loss``, ``lr``, ``steps``, ``strategy_used``, ``search_s``, ``epoch_s``
            (wall seconds, with the evaluation) and ``images_per_s`` (search images per
            second of search steps).
        checkpoint_dir: if given, ``search.pt`` is written there atomically after every epoch;
            an existing one is resumed from (the run continues where it stopped and, on CPU,
            reproduces the uninterrupted run exactly).
        on_step: called after every search step with ``(epoch, step, steps)`` (1-based epoch,
            0-based step), e.g. for a progress bar.

    Returns:
        The :class:`SearchResult`.

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
        >>> len(result.history)
        1
    """
    device = torch.device(device)
    t_start = time.perf_counter()
    parts = build_search(config, data.num_classes, data.channels, device)
    model, architect, w_opt, sched = parts.model, parts.architect, parts.w_opt, parts.sched
    train_idx, arch_idx = _split(len(data.train), config.train_portion, config.seed)
    eval_attack = AttackSpec(kind="pgd", eps=config.attack.eps, alpha=config.attack.alpha,
                             steps=config.eval_attack_steps, random_start=True, clip=config.attack.clip)

    history: list[dict[str, Any]] = []
    start_epoch = 0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=device)
        diff = _config_diff(state.get("config"), config.to_dict())
        if diff:
            raise CheckpointError(f"checkpoint {str(ckpt_path)!r} was written by a different search config "
                                  f"(fields {diff} differ); use another checkpoint directory or delete it")
        model.load_state_dict(state["model"])
        w_opt.load_state_dict(state["w_opt"])
        architect.optimizer.load_state_dict(state["a_opt"])
        sched.load_state_dict(state["sched"])
        set_rng_state(state["rng"])
        history = list(state["history"])
        start_epoch = int(state["epoch"]) + 1
        logger.info("resumed search from %s at epoch %d", ckpt_path, start_epoch)

    check_every = 1 if device.type == "cpu" else 25
    for epoch in range(start_epoch, config.epochs):
        t_epoch = time.perf_counter()
        eta = w_opt.param_groups[0]["lr"]
        strategy = "adversarial" if epoch < config.warmup_adv_epochs else config.strategy
        # data order and attack starts depend only on (seed, epoch): resume is exact
        epoch_seed = config.seed * 100_003 + epoch
        train_loader = make_loader(Subset(data.train, train_idx), config.batch_size, shuffle=True,
                                   seed=epoch_seed, drop_last=True)
        arch_loader = make_loader(Subset(data.train, arch_idx), config.batch_size, shuffle=True,
                                  seed=epoch_seed + 1, drop_last=True)
        gen = torch.Generator(device="cpu").manual_seed(epoch_seed + 2)
        steps = min(len(train_loader), len(arch_loader))
        if config.steps_per_epoch is not None:
            steps = min(steps, config.steps_per_epoch)
        if steps == 0:
            raise SpecError("batch_size", f"batch_size={config.batch_size} leaves no full batch in a split of "
                                          f"{min(len(train_idx), len(arch_idx))} items")
        gammas: list[torch.Tensor] = []
        loss_sum = torch.zeros((), device=device)
        bad = torch.zeros((), dtype=torch.bool, device=device)
        first_bad = torch.full((), -1, dtype=torch.long, device=device)
        model.train()
        t_search = time.perf_counter()
        for step, ((x_tr, y_tr), (x_val, y_val)) in enumerate(zip(train_loader, arch_loader)):
            if step >= steps:
                break
            out = search_step(parts, x_tr.to(device, non_blocking=True), y_tr.to(device, non_blocking=True),
                              x_val.to(device, non_blocking=True), y_val.to(device, non_blocking=True),
                              eta=eta, strategy=strategy, generator=gen)
            gammas.append(out.gamma)
            loss_sum += out.loss
            step_bad = ~out.finite
            first_bad = torch.where(step_bad & ~bad, torch.full_like(first_bad, step), first_bad)
            bad = bad | step_bad
            if (step + 1) % check_every == 0 or step + 1 == steps:
                if bool(bad):  # one host sync per check
                    s = int(first_bad)
                    kept = (f"the checkpoint of epoch {epoch} in {str(ckpt_path)!r} is kept"
                            if ckpt_path is not None and ckpt_path.exists() else "no checkpoint was written")
                    raise DivergenceError(
                        f"non-finite loss or gradient in the search at epoch {epoch + 1}, step {s} "
                        f"(lr={eta}, arch_lr={config.arch_lr}); lower the learning rates; {kept}",
                        epoch=epoch + 1, step=s)
            if on_step is not None:
                on_step(epoch + 1, step, steps)
        search_s = time.perf_counter() - t_search
        sched.step()
        for name, a in model.arch_parameters().items():
            if not bool(torch.isfinite(a).all()):
                raise DivergenceError(f"non-finite architecture parameters {name!r} at epoch {epoch + 1}",
                                      epoch=epoch + 1, step=steps - 1)
        nat_acc, pgd_acc = supernet_accuracy(model, data.val, device, attack=eval_attack,
                                             samples=config.eval_samples, seed=config.seed)
        g = torch.stack(gammas)
        genotype = model.genotype()
        wall = time.perf_counter() - t_epoch
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "nat_acc": nat_acc,
            "pgd_acc": pgd_acc,
            "train_loss": float(loss_sum) / steps,
            "gamma_mean": float(g.mean()),
            "gamma_last": float(g[-1]),
            "genotype": genotype.to_json(),
            "strategy_used": strategy,
            "lr": eta,
            "steps": steps,
            "search_s": search_s,
            "epoch_s": wall,
            "images_per_s": steps * config.batch_size / search_s,
        }
        for name, a in model.arch_parameters().items():
            metrics[f"entropy_{name}"] = _entropy(a)
        history.append(metrics)
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "w_opt": w_opt.state_dict(), "a_opt": architect.optimizer.state_dict(),
                "sched": sched.state_dict(), "rng": rng_state(), "epoch": epoch, "history": history,
                "config": config.to_dict(),
            })
        if callback is not None:
            callback(dict(metrics))

    genotype = model.genotype()
    final = history[-1] if history else {"nat_acc": float("nan"), "pgd_acc": float("nan")}
    derived = Network(genotype, config.layout(), config.width(), data.num_classes, config.cells,
                      in_channels=data.channels)
    return SearchResult(
        genotype=genotype,
        alphas={k: v.detach().cpu().tolist() for k, v in model.arch_parameters().items()},
        history=history,
        nat_acc=float(final["nat_acc"]),
        pgd_acc=float(final["pgd_acc"]),
        params=count_params(derived),
        macs=count_macs(derived, data.image_size, data.channels),
        wall_s=time.perf_counter() - t_start,
        epochs=len(history),
    )
