"""``arnas-ray genotype show|cost`` and ``arnas-ray supernet cost``: inspect and size architectures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from arnas_ray.errors import SpecError

__all__ = ["register"]


def _ratios(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise SpecError("--channel-ratios", f"expected comma-separated numbers such as 1,2,2, got {text!r}") from None


def _layout(args: argparse.Namespace):
    from arnas_ray.space import Layout

    return Layout.from_spec(args.layout, _ratios(args.channel_ratios))


def _positive(name: str, value: int) -> int:
    if value <= 0:
        raise SpecError(name, f"`{name} > 0` must hold, but got {value}")
    return value


def _genotype_show(args: argparse.Namespace) -> int:
    from arnas_ray.space import Genotype

    g = Genotype.resolve(args.genotype)
    if args.out is not None:
        from arnas_ray.results import draw_genotype

        out = Path(args.out)
        paths = draw_genotype(g, out, fmt=args.format)
        for ctype, path in paths.items():
            print(f"{ctype}: {path}")
        return 0
    if args.json:
        print(g.to_json(indent=2))
        return 0
    for ctype, cell in g.cells.items():
        print(f"{ctype}:")
        for node in range(cell.steps):
            (op1, i1), (op2, i2) = cell.edges[2 * node], cell.edges[2 * node + 1]
            print(f"  node {node + 2}: {op1}({_state(i1)}) + {op2}({_state(i2)})")
        print(f"  output: concat({', '.join(_state(c) for c in cell.concat)})")
    return 0


def _state(i: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(i, f"node {i}")


def _cost_line(model, args) -> None:
    from arnas_ray.space import count_macs, count_params

    print(json.dumps({"params": count_params(model), "macs": count_macs(model, args.size),
                      "channels": args.channels, "cells": args.cells, "classes": args.classes,
                      "size": args.size, "layout": args.layout}))


def _genotype_cost(args: argparse.Namespace) -> int:
    from arnas_ray.space import Genotype, Network

    _positive("--channels", args.channels), _positive("--cells", args.cells), _positive("--size", args.size)
    g = Genotype.resolve(args.genotype)
    net = Network(g, _layout(args), args.channels, args.classes, args.cells, auxiliary=True)
    _cost_line(net, args)
    return 0


def _supernet_cost(args: argparse.Namespace) -> int:
    from arnas_ray.search.config import PRIMITIVE_SETS
    from arnas_ray.space import Supernet

    _positive("--channels", args.channels), _positive("--cells", args.cells), _positive("--size", args.size)
    if args.primitives not in PRIMITIVE_SETS:
        raise SpecError("--primitives", f"unknown value {args.primitives!r}; expected one of {tuple(PRIMITIVE_SETS)}")
    net = Supernet(_layout(args), args.channels, args.classes, args.cells, primitives=PRIMITIVE_SETS[args.primitives])
    _cost_line(net, args)
    return 0


def _sizing(p: argparse.ArgumentParser, channels: int, cells: int) -> None:
    p.add_argument("--layout", default="arnas", help="layout preset (arnas, darts, robust-first, ...)")
    p.add_argument("--channel-ratios", default=None, help="per-stage width multipliers, e.g. 1,2,2")
    p.add_argument("--channels", type=int, default=channels, help="base width C")
    p.add_argument("--cells", type=int, default=cells, help="number of cells L")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--size", type=int, default=32, help="input image size for the MAC count")


def register(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("genotype", help="show or size a genotype")
    gsub = g.add_subparsers(dest="genotype_command", metavar="ACTION")
    gsub.required = True
    show = gsub.add_parser("show", help="print a genotype (text, --json) or draw its cells (--out)")
    show.add_argument("genotype", help="a known name (ARNAS, DARTS_V2) or a genotype .json file")
    show.add_argument("--json", action="store_true", help="print the JSON form")
    show.add_argument("--format", choices=("svg", "png"), default="svg", help="drawing format with --out")
    show.add_argument("--out", default=None, help="directory for one drawing per cell type")
    show.set_defaults(func=_genotype_show)
    cost = gsub.add_parser("cost", help="params and MACs of the discrete network (one JSON line)")
    cost.add_argument("genotype")
    _sizing(cost, 36, 20)
    cost.set_defaults(func=_genotype_cost)

    s = sub.add_parser("supernet", help="size the search supernet")
    ssub = s.add_subparsers(dest="supernet_command", metavar="ACTION")
    ssub.required = True
    sc = ssub.add_parser("cost", help="params (alphas excluded) and MACs of the supernet (one JSON line)")
    _sizing(sc, 24, 8)
    sc.add_argument("--primitives", default="arnas", help="op set: arnas (7 ops) or darts (8, with none)")
    sc.set_defaults(func=_supernet_cost)
