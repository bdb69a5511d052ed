"""``arnas-ray search``: one ARNAS search on one machine, without Ray.

The :class:`~arnas_ray.search.SearchConfig` comes from an optional YAML file and the flags
(flags win). The run folder ``--out`` receives, each epoch and atomically, ``search.pt`` (the
checkpoint: running the same command again resumes from it), ``history.jsonl`` (one JSON
line per epoch: the metrics of :mod:`arnas_ray.search.result`, MGDA diagnostics included),
``steps.jsonl`` (one JSON line per search step: gamma, hypergradient norms and cosine, the
descent check; :func:`arnas_ray._diagnostics.step_record`) and ``genotype.json`` (the current
genotype); at the end ``result.json`` (the :class:`~arnas_ray.search.SearchResult` plus the
data set). A progress bar on stderr shows the epoch, the step, natural / PGD accuracy on the
held-out split, gamma, the degeneracy warning and the ETA; stdout receives the genotype and
the final accuracies.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from arnas_ray._atomic import atomic_write_text
from arnas_ray._loop import read_history, write_history
from arnas_ray.cli._args import data_arguments, yaml_mapping
from arnas_ray.cli._args import names as _names
from arnas_ray.cli._args import number as _number
from arnas_ray.cli._args import numbers as _numbers
from arnas_ray.errors import SpecError

__all__ = ["format_genotype", "register"]





def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "search", help="run one ARNAS search (MGDA over natural and PGD loss), no Ray",
        description="Run one ARNAS differentiable architecture search on one device. Re-running "
                    "the same command with the same --out resumes from OUT/search.pt.",
    )
    data_arguments(p, limit_help="use at most N training items")
    p.add_argument("--config", type=Path, default=None, help="SEARCH.yaml with SearchConfig fields")
    p.add_argument("--layout", type=_names, default=None,
                   help="layout preset (arnas, darts, robust-first, ...) or a comma-separated "
                        "placement such as accurate,accurate,robust")
    p.add_argument("--channel-ratios", type=_numbers, default=None, help="per-stage widths, e.g. 1,2,2")
    p.add_argument("--equal-width", action="store_true", default=None,
                   help="rescale --channels so the sum of stage widths equals the arnas layout's")
    p.add_argument("--strategy", default=None, help="mgda (default), fixed, natural or adversarial")
    p.add_argument("--fixed-weights", type=_numbers, default=None, help="w_nat,w_adv for --strategy fixed")
    p.add_argument("--order", default=None, help="second (default), first or exact")
    p.add_argument("--normalization", default=None, help="MGDA normalisation: none, l2, loss, loss+")
    p.add_argument("--adv-coef", type=_number, default=None, help="scale of the adversarial objective (0.1)")
    p.add_argument("--fd-radius", type=_number, default=None,
                   help="finite-difference radius of the second-order hypergradient (0.01)")
    p.add_argument("--warmup-adv-epochs", type=int, default=None, help="adversarial-only first epochs (0)")
    p.add_argument("--lr", type=_number, default=None, help="weight learning rate (0.025)")
    p.add_argument("--arch-lr", type=_number, default=None, help="architecture (Adam) learning rate (3e-4)")
    p.add_argument("--no-diagnostics", action="store_const", const=False, default=None, dest="diagnostics",
                   help="record only gamma per step (no hypergradient norms, cosine, descent check)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--channels", type=int, default=None, help="base width C")
    p.add_argument("--cells", type=int, default=None, help="number of cells L")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--steps-per-epoch", type=int, default=None, help="cap on search steps per epoch")
    p.add_argument("--eval-samples", type=int, default=None, help="held-out items for the accuracies")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, history, genotype)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_search)


def _config_mapping(args: argparse.Namespace) -> dict[str, Any]:
    data: Any = yaml_mapping(args.config, "SearchConfig")
    layout = args.layout
    if layout is not None and len(layout) == 1:
        layout = layout[0]  # a preset name
    flags = {
        "placement": layout, "channel_ratios": args.channel_ratios, "equal_width": args.equal_width,
        "strategy": args.strategy, "fixed_weights": args.fixed_weights, "order": args.order,
        "normalization": args.normalization, "adv_coef": args.adv_coef, "fd_radius": args.fd_radius,
        "warmup_adv_epochs": args.warmup_adv_epochs, "lr": args.lr, "arch_lr": args.arch_lr,
        "diagnostics": args.diagnostics, "epochs": args.epochs,
        "channels": args.channels, "cells": args.cells, "batch_size": args.batch_size,
        "steps_per_epoch": args.steps_per_epoch, "eval_samples": args.eval_samples, "seed": args.seed,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    return data


def format_genotype(genotype: Any) -> str:
    """One line per cell type, ARNAS.md's notation: ``(op,input) (op,input) | ...  concat 2..5``."""
    lines = []
    width = max(len(t) for t in genotype.cell_types) + 1
    for ctype in genotype.cell_types:
        cell = genotype[ctype]
        nodes = [" ".join(f"({op},{i})" for op, i in cell.edges[k:k + 2]) for k in range(0, len(cell.edges), 2)]
        concat = list(cell.concat)
        span = f"{concat[0]}..{concat[-1]}" if concat == list(range(concat[0], concat[-1] + 1)) else str(concat)
        lines.append(f"{ctype + ':':<{width}} {' | '.join(nodes)}   concat {span}")
    return "\n".join(lines)


def _epoch_line(rec: dict[str, Any]) -> str:
    line = (f"nat {rec['nat_acc']:.3f}  pgd {rec['pgd_acc']:.3f}  gamma {rec['gamma_mean']:.2f}  "
            f"{rec['images_per_s']:.1f} img/s")
    return line + (f"  warning: {rec['degeneracy']}" if rec.get("degeneracy") else "")


def _run_with_progress(args: argparse.Namespace, config: Any, data: Any, device: Any) -> Any:
    """``run_search`` with the progress bar, writing history.jsonl and genotype.json per epoch."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from arnas_ray.search import run_search
    from arnas_ray.space import Genotype

    out: Path = args.out
    hist_path = out / "history.jsonl"
    history: list[dict[str, Any]] = []
    if hist_path.is_file():  # a resumed run keeps the epochs already written
        history = read_history(hist_path)
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]} step {task.fields[step]}"),
        BarColumn(), TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), console=console, disable=args.no_progress,
    )
    with progress:
        task = progress.add_task("search", total=None, epoch=0, epochs=config.epochs, step="-", stats="")

        def on_step(epoch: int, step: int, steps: int) -> None:
            progress.update(task, total=config.epochs * steps, completed=(epoch - 1) * steps + step + 1,
                            epoch=epoch, step=f"{step + 1}/{steps}")

        def on_epoch(rec: dict[str, Any]) -> None:
            history[:] = [h for h in history if h.get("epoch", 0) < rec["epoch"]] + [rec]
            write_history(hist_path, history)
            atomic_write_text(out / "genotype.json", Genotype.from_json(rec["genotype"]).to_json(indent=2) + "\n")
            progress.update(task, stats=_epoch_line(rec))
            if args.no_progress:
                console.print(f"epoch {rec['epoch']}/{config.epochs}  {_epoch_line(rec)}")

        return run_search(config, data, device, callback=on_epoch, checkpoint_dir=out, on_step=on_step)


def _search(args: argparse.Namespace) -> int:
    import torch

    from arnas_ray.data import load_dataset
    from arnas_ray.device import pick_device
    from arnas_ray.search import SearchConfig

    config = SearchConfig.from_dict(_config_mapping(args))
    if args.threads is not None:
        if args.threads < 1:
            raise SpecError("threads", f"`threads >= 1` must hold, but got threads={args.threads}")
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    data = load_dataset(args.dataset, root=args.root, image_size=args.image_size, seed=config.seed,
                        limit=args.data_limit)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    result = _run_with_progress(args, config, data, device)
    write_history(out / "history.jsonl", result.history)
    atomic_write_text(out / "genotype.json", result.genotype.to_json(indent=2) + "\n")
    summary = {**result.to_dict(), "dataset": args.dataset, "image_size": data.image_size,
               "device": str(device), "config": config.to_dict()}
    atomic_write_text(out / "result.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(format_genotype(result.genotype))
    print(f"supernet on the held-out split: natural {result.nat_acc:.4f}  PGD-{config.eval_attack_steps} "
          f"{result.pgd_acc:.4f}  (epochs {result.epochs}, {result.wall_s:.0f} s); derived network at "
          f"C={config.width()}: {result.params:,} params, {result.macs / 1e6:.1f} M MACs")
    if result.degeneracy:
        print(f"warning: the MGDA search {result.degeneracy}")
    print(f"wrote {out / 'genotype.json'}, history.jsonl, steps.jsonl, result.json, search.pt")
    return 0
