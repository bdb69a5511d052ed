"""``arnas-ray retrain`` and ``arnas-ray eval``: adversarial retraining and robust evaluation.

``retrain`` builds a :class:`~arnas_ray.train.RetrainConfig` from an optional YAML file and
the flags (flags win), trains with a progress bar on stderr, evaluates the selected model on
the test split and prints one JSON line (the :class:`~arnas_ray.train.EvalResult`) on stdout.
``eval`` rebuilds a network from a checkpoint and prints its evaluation as one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from arnas_ray._atomic import atomic_write_text
from arnas_ray._config import from_dict
from arnas_ray._metrics import DEFAULT_EVAL_ATTACKS, EVAL_ATTACKS
from arnas_ray.cli._args import data_arguments, yaml_mapping
from arnas_ray.cli._args import names as _names
from arnas_ray.cli._args import number as _number
from arnas_ray.cli._args import numbers as _numbers

__all__ = ["register"]


def _default_retrain_attacks() -> list[str]:
    """The final evaluation of ``retrain``: every attack but AutoAttack (slow; ``eval`` has it)."""
    return list(DEFAULT_EVAL_ATTACKS)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _register_retrain(subparsers)
    _register_eval(subparsers)


def _register_retrain(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "retrain", help="adversarially retrain a genotype and evaluate it on the test split",
        description="Adversarially retrain the discrete network of a genotype (PGD-AT, TRADES or "
                    "natural training); select on the val split; evaluate on the test split.",
    )
    p.add_argument("genotype", metavar="GENOTYPE|FILE.json", help="known genotype name or JSON file")
    data_arguments(p, limit_help="use at most N training and N test items (quick runs)")
    p.add_argument("--config", type=Path, default=None, help="RETRAIN.yaml with RetrainConfig fields")
    p.add_argument("--layout", default=None, help="layout preset (default: arnas)")
    p.add_argument("--channel-ratios", type=_numbers, default=None, help="e.g. 1,2,2")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--channels", type=int, default=None, help="base width C")
    p.add_argument("--cells", type=int, default=None, help="number of cells L")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=_number, default=None)
    p.add_argument("--method", default=None,
                   help="training objective, a RetrainConfig.method (default: pgd-at)")
    p.add_argument("--eps", type=_number, default=None,
                   help="L-inf budget of training and evaluation, e.g. 8/255; the PGD step "
                        "becomes eps/4 unless --alpha (or the config file) sets it")
    p.add_argument("--alpha", type=_number, default=None, help="PGD step size")
    p.add_argument("--cutout", type=int, default=None, help="Cutout side (0: none)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, history)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT has a checkpoint")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto)")
    p.add_argument("--eval-attacks", type=_names, default=None,
                   help="comma-separated attacks of the final test-set evaluation, from "
                        f"{','.join(EVAL_ATTACKS)} (default: "
                        f"{','.join(_default_retrain_attacks())})")
    p.add_argument("--aa-subset", type=int, default=None, help="AutoAttack on the first N examples")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate at most N test examples")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_retrain)


def _register_eval(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    e = subparsers.add_parser(
        "eval", help="robust evaluation of a retrained checkpoint",
        description="Evaluate a checkpoint written by 'retrain' under natural, FGSM, PGD-20, "
                    "PGD-100, AutoAttack and transfer attacks; print one JSON line.",
    )
    e.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="best.pt or checkpoint.pt")
    e.add_argument("--dataset", default=None, help="data set (default: the one it was trained on)")
    e.add_argument("--root", default=None)
    e.add_argument("--image-size", type=int, default=None, help="default: the training size")
    e.add_argument("--split", choices=("test", "val"), default="test")
    e.add_argument("--data-seed", type=int, default=None,
                   help="seed of the splits (default: the training seed, so test stays unseen)")
    e.add_argument("--attacks", type=_names, default=list(EVAL_ATTACKS),
                   help=f"comma-separated subset of {','.join(EVAL_ATTACKS)} (default: all)")
    e.add_argument("--aa-subset", type=int, default=None, help="AutoAttack on the first N examples")
    e.add_argument("--transfer-from", type=Path, default=None, metavar="CHECKPOINT",
                   help="source model of a black-box PGD-20 transfer attack")
    e.add_argument("--eps", type=_number, default=None, help="default: the training eval eps")
    e.add_argument("--alpha", type=_number, default=None, help="PGD step (default: eps/4)")
    e.add_argument("--limit", type=int, default=None, help="evaluate at most N examples")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--seed", type=int, default=0, help="seeds the attacks' random starts")
    e.add_argument("--device", default=None)
    e.set_defaults(func=_eval)


def _config_mapping(args: argparse.Namespace) -> dict[str, Any]:
    data: Any = yaml_mapping(args.config, "RetrainConfig")
    flags = {
        "placement": args.layout, "channel_ratios": args.channel_ratios, "epochs": args.epochs,
        "channels": args.channels, "cells": args.cells, "batch_size": args.batch_size,
        "lr": args.lr, "method": args.method, "cutout": args.cutout, "seed": args.seed,
        "steps_per_epoch": args.steps_per_epoch,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.eps is not None or args.alpha is not None:
        for key in ("attack", "eval_attack"):
            spec = dict(data.get(key) or {})
            if args.eps is not None:
                spec["eps"] = args.eps
                spec.setdefault("alpha", args.eps / 4)
            if args.alpha is not None:
                spec["alpha"] = args.alpha
            data[key] = spec
    return data


def _retrain(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from arnas_ray.data import load_dataset
    from arnas_ray.device import pick_device
    from arnas_ray.space import Genotype
    from arnas_ray.train import RetrainConfig, evaluate, retrain

    config = from_dict(RetrainConfig, _config_mapping(args))
    genotype = Genotype.resolve(args.genotype)
    device = pick_device(args.device)
    data = load_dataset(args.dataset, root=args.root, image_size=args.image_size,
                        cutout=config.cutout, seed=config.seed, limit=args.data_limit)
    progress = Progress(
        TextColumn("epoch {task.completed}/{task.total}"), BarColumn(),
        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), console=Console(stderr=True), disable=args.no_progress,
    )
    with progress:
        task = progress.add_task("retrain", total=config.epochs, stats="")

        def on_epoch(rec: dict[str, Any]) -> None:
            stats = (f"loss {rec['train_loss']:.3f}  nat {rec['val_nat_acc']:.3f}  "
                     f"pgd {rec['val_pgd_acc']:.3f}  {rec['images_per_s']:.0f} img/s")
            progress.update(task, completed=rec["epoch"], stats=stats)

        result = retrain(genotype, config, data, device, out_dir=args.out, callback=on_epoch,
                         resume=not args.no_resume)
        progress.update(task, completed=config.epochs)
    attacks = args.eval_attacks or _default_retrain_attacks()
    ev = evaluate(result.model, data.test, device, attacks=attacks,
                  aa_subset=args.aa_subset, seed=config.seed, limit=args.eval_limit,
                  eps=config.eval_attack.eps, alpha=config.eval_attack.alpha)
    line = ev.to_json()
    atomic_write_text(args.out / "eval.json", line + "\n")
    print(line)
    return 0


def _checkpoint_data(args: argparse.Namespace, info: dict[str, Any], seed: int) -> Any:
    """The data set the checkpoint is evaluated on; its classes must be the model's."""
    from arnas_ray.data import load_dataset
    from arnas_ray.errors import SpecError

    data = load_dataset(args.dataset or info["dataset"], root=args.root,
                        image_size=args.image_size or info["image_size"], augment=False,
                        seed=seed)
    if data.num_classes != info["num_classes"]:
        raise SpecError("--dataset", f"{args.checkpoint}: the network has {info['num_classes']} "
                                     f"classes, but dataset {data.name!r} has {data.num_classes}")
    return data


def _eval(args: argparse.Namespace) -> int:
    from arnas_ray.device import pick_device
    from arnas_ray.train import RetrainConfig, evaluate, load_model

    device = pick_device(args.device)
    model, info = load_model(args.checkpoint, device, return_info=True)
    config = from_dict(RetrainConfig, info["config"])  # checked by load_model
    source = load_model(args.transfer_from, device) if args.transfer_from is not None else None
    seed = args.data_seed if args.data_seed is not None else config.seed
    data = _checkpoint_data(args, info, seed)
    eps = args.eps if args.eps is not None else config.eval_attack.eps
    alpha = args.alpha
    if alpha is None and args.eps is None:
        alpha = config.eval_attack.alpha
    ev = evaluate(model, data.test if args.split == "test" else data.val, device,
                  attacks=args.attacks, aa_subset=args.aa_subset,
                  transfer_from=source, batch_size=args.batch_size, seed=args.seed,
                  limit=args.limit, eps=eps, alpha=alpha)
    print(json.dumps(ev.to_dict()))
    return 0
