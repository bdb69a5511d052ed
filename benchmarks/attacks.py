"""PGD-20 throughput of arnas_ray.attacks.pgd against torchattacks.PGD, on one model and batch.

Prints one JSON line:
    {"bench": "pgd20", "ours_img_s": ..., "torchattacks_img_s": ..., "ratio": ...}
(``ratio`` = ours / torchattacks; >= 1 means ours is at least as fast). With ``--autoattack`` the
line also carries ``autoattack_img_s`` (standard AutoAttack on ``--aa-batch-size`` images).

Usage:
    python benchmarks/attacks.py [--device cpu|cuda] [--batch-size 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from arnas_ray.attacks import PRESETS, autoattack, pgd
from arnas_ray.device import pick_device

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import emit  # noqa: E402


class SepConv(nn.Module):
    """DARTS separable convolution: (ReLU, depthwise 3x3, pointwise 1x1, BN) twice."""

    def __init__(self, c: int, stride: int = 1) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Cell(nn.Module):
    """Two parallel edges (sep-conv 3x3 and skip / factorized reduce) summed, DARTS-like."""

    def __init__(self, c_in: int, c_out: int, reduce: bool) -> None:
        super().__init__()
        stride = 2 if reduce else 1
        self.pre = nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.sep = SepConv(c_out, stride)
        self.skip = nn.AvgPool2d(3, stride, 1, count_include_pad=False) if reduce else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        return self.sep(h) + self.skip(h)


def darts_like(c: int = 16, n_classes: int = 10) -> nn.Module:
    """8 cells with reductions at 1/3 and 2/3 depth, on 3x32x32 inputs."""
    layers: list[nn.Module] = [nn.Conv2d(3, 3 * c, 3, padding=1, bias=False), nn.BatchNorm2d(3 * c)]
    c_prev, c_cur = 3 * c, c
    for i in range(8):
        reduce = i in (2, 5)
        if reduce:
            c_cur *= 2
        layers.append(Cell(c_prev, c_cur, reduce))
        c_prev = c_cur
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_prev, n_classes)]
    return nn.Sequential(*layers)


def _seconds(fn) -> float:
    """Wall seconds of one ``fn()`` (``fn`` syncs the device by reading a scalar)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--autoattack", action="store_true", help="also time standard AutoAttack")
    parser.add_argument("--aa-batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    device = pick_device(args.device)
    torch.manual_seed(0)
    n_classes = 10
    model = darts_like(args.channels, n_classes).to(device).eval()
    x = torch.rand(args.batch_size, 3, 32, 32, device=device)
    with torch.no_grad():  # labels = clean predictions: every image is attacked in full
        y = model(x).argmax(dim=1)
    spec = PRESETS["pgd20"]

    import torchattacks

    ref = torchattacks.PGD(model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps, random_start=True)
    gen = torch.Generator(device=device).manual_seed(0)

    def ours() -> None:
        pgd(model, x, y, spec, generator=gen).sum().item()

    def theirs() -> None:
        ref(x, y).sum().item()

    ours(), theirs()  # warm-up (cuDNN autotune, allocator)
    t_ours, t_ref = [], []
    for _ in range(args.repeats):  # interleave so drifts (clock, thermal) hit both alike
        t_ours.append(_seconds(ours))
        t_ref.append(_seconds(theirs))
    ours_img_s = args.batch_size / statistics.median(t_ours)
    ref_img_s = args.batch_size / statistics.median(t_ref)
    result = {
        "bench": "pgd20",
        "device": str(device),
        "batch_size": args.batch_size,
        "ours_img_s": round(ours_img_s, 2),
        "torchattacks_img_s": round(ref_img_s, 2),
        "ratio": round(ours_img_s / ref_img_s, 4),
    }
    if args.autoattack:  # standard AutoAttack through the adapter vs torchattacks' port, one pass each
        xa, ya = x[: args.aa_batch_size], y[: args.aa_batch_size]
        aa_spec = PRESETS["aa"]
        ref_aa = torchattacks.AutoAttack(model, norm="Linf", eps=aa_spec.eps, version="standard",
                                         n_classes=n_classes, seed=0)
        ours_aa = _seconds(lambda: autoattack(model, xa, ya, aa_spec, seed=0).sum().item())
        theirs_aa = _seconds(lambda: ref_aa(xa, ya).sum().item())
        result.update(autoattack_batch=xa.shape[0], autoattack_img_s=round(xa.shape[0] / ours_aa, 3),
                      torchattacks_autoattack_img_s=round(xa.shape[0] / theirs_aa, 3),
                      autoattack_ratio=round(theirs_aa / ours_aa, 4))
    emit(result)
    return result


if __name__ == "__main__":
    main()
