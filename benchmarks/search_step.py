"""Time one full ARNAS search step of arnas-ray against the reference implementation.

One step = PGD-7 on a training and a validation batch, the architecture step (second order:
shared unrolled weights, two validation passes, 2x2 finite-difference Hessian-vector passes,
MGDA) and the weight step on the adversarial training batch, exactly as
:func:`arnas_ray.search.loop.search_step` runs it inside ``run_search``.

The reference (github:fyqsama/ARNAS, read from a local git mirror, never copied) is timed by
``/work/shared/bench/ref_search_step.py`` in a subprocess with the same thread count, in the
same run and interleaved with ours, because the machines here are shared and timings drift;
only ratios measured together count. It needs ``cleverhans==4.0.0`` (``pip install --no-deps``).

Usage::

    python -m benchmarks.search_step [--shape small|large|tiny] [--order second first]
        [--threads 1 2] [--steps 3] [--rounds 2] [--mirror DIR | --no-reference]

Prints one JSON line per measurement (``impl``, ``order``, ``sec_per_step`` (median over
rounds, each round the mean of ``--steps`` steps after a warm-up step), ``images_per_s``,
``peak_mem_mb``) and finally one line per order and thread count with the ratio of images/s to
the reference's second-order step (median over rounds, ``per_round`` and ``worst_round``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from arnas_ray.space import _fused_cell  # noqa: E402
from benchmarks._common import PASSES, cpu_model, emit, matmul_gflops, time_search_step  # noqa: E402

# "tiny" is for smoke tests only (a second's work); the targets are measured at "small"
SHAPES = {"tiny": dict(C=4, layers=3, batch=8, size=8), "small": dict(C=8, layers=5, batch=16, size=32),
          "large": dict(C=16, layers=8, batch=32, size=32)}
# the shared/ folder beside the checkout (as CI and the development machines lay it out)
REF_SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "bench" / "ref_search_step.py"
MIRROR = Path("/work/.mirror/fyqsama+ARNAS/repo")


def time_ours(order: str, shape: dict[str, int], steps: int, device: torch.device, compile_: bool = False,
              pair: bool = True) -> dict[str, Any]:
    r = time_search_step(C=shape["C"], cells=shape["layers"], size=shape["size"], batch=shape["batch"],
                         order=order, device=device, steps=steps, pair=pair, compile_=compile_)
    return {"impl": "arnas-ray", "order": order, **r}


def time_ours_subprocess(order: str, shape_name: str, steps: int, threads: int, device: str,
                         compile_: bool, pair: bool, embed: bool = True) -> dict[str, Any]:
    """:func:`time_ours` in a fresh process, so that its peak memory is its own."""
    cmd = [sys.executable, __file__, "--worker", order, "--shape", shape_name, "--steps", str(steps),
           "--threads", str(threads), "--device", device] + (["--compile"] if compile_ else []) \
        + ([] if pair else ["--no-pair"]) + ([] if embed else ["--no-embed"])
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if proc.returncode != 0:
        raise RuntimeError(f"arnas-ray benchmark worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_reference(shape: dict[str, int], steps: int, threads: int, mirror: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(REF_SCRIPT), "--mirror", str(mirror), "--C", str(shape["C"]),
           "--layers", str(shape["layers"]), "--batch", str(shape["batch"]), "--size", str(shape["size"]),
           "--steps", str(steps), "--threads", str(threads)]
    wrapper = ("import resource, runpy, sys, json; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__'); "
               "print(json.dumps({'ref_maxrss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))")
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd[1:]], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if proc.returncode != 0:
        raise RuntimeError(f"reference benchmark failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    res = next(d for d in lines if d.get("impl") == "reference")
    rss = next((d["ref_maxrss_kb"] for d in lines if "ref_maxrss_kb" in d), None)
    return {"impl": "reference", "order": "second", "sec_per_step": res["sec_per_step"],
            "images_per_s": res["images_per_sec"],
            "peak_mem_mb": round(rss / 1024, 1) if rss is not None else None,  # whole-process maxrss
            "threads": res["threads"]}


def _check_reference(mirror: Path) -> list[str]:
    """What the reference run needs and is missing."""
    missing = []
    try:
        import cleverhans  # noqa: F401
    except ImportError:
        missing.append("cleverhans==4.0.0 (pip install --no-deps cleverhans==4.0.0)")
    if not REF_SCRIPT.is_file():
        missing.append(str(REF_SCRIPT))
    if not (mirror / "HEAD").exists() and not (mirror / ".git").exists():
        missing.append(f"a git mirror of github:fyqsama/ARNAS at {mirror}")
    return missing


def _summarise(runs: dict[tuple[str, str, int], list[dict[str, Any]]], a: argparse.Namespace,
               meta: dict[str, Any], shape: dict[str, int]) -> None:
    """One summary line per (implementation, order, threads) and one ratio line per (order, threads)."""
    peaks = {}
    for threads in a.threads:  # this machine's matmul rate with each thread count
        torch.set_num_threads(threads)
        peaks[threads] = matmul_gflops(a.device, n=2048 if a.device.startswith("cuda") else 1024)
    summary = {}
    for (impl, order, threads), rs in runs.items():
        sec = statistics.median(x["sec_per_step"] for x in rs)
        mems = [x["peak_mem_mb"] for x in rs if x["peak_mem_mb"] is not None]
        summary[(impl, order, threads)] = sec
        line: dict[str, Any] = {"bench": "search_step", "impl": impl, "order": order, "sec_per_step": round(sec, 4),
                                "images_per_s": round(shape["batch"] / sec, 3),
                                "peak_mem_mb": max(mems) if mems else None, "rounds": len(rs), **meta,
                                "threads": threads}
        if impl == "arnas-ray":
            gflops = 2 * rs[0]["macs_per_image"] * shape["batch"] * 3 * PASSES[order] / sec / 1e9
            line.update(pair_attacks=not a.no_pair, achieved_gflops=round(gflops, 2),
                        matmul_gflops=round(peaks[threads], 1), fraction_of_matmul=round(gflops / peaks[threads], 4))
        emit(line)
    for threads in a.threads:
        ref = summary.get(("reference", "second", threads))
        if ref is None:
            continue
        refs = runs[("reference", "second", threads)]
        for order in a.order:
            ours = runs[("arnas-ray", order, threads)]
            per_round = [round(x["sec_per_step"] / y["sec_per_step"], 2) for x, y in zip(refs, ours)]
            emit({"bench": "search_step_ratio", "shape": a.shape, "ratio": f"arnas-ray {order} / reference second",
                  "order": order, "threads": threads,
                  "speedup_images_per_s": round(ref / summary[("arnas-ray", order, threads)], 2),
                  "per_round": per_round, "worst_round": min(per_round)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="small")
    p.add_argument("--order", nargs="+", choices=("second", "first"), default=["second", "first"])
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                   help="thread counts, each timed (ours and the reference) in every round")
    p.add_argument("--steps", type=int, default=3, help="timed steps per round (after one warm-up)")
    p.add_argument("--ref-steps", type=int, default=2, help="timed reference steps per round")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians are reported")
    p.add_argument("--mirror", type=Path, default=MIRROR, help="git mirror of github:fyqsama/ARNAS")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the forward passes")
    p.add_argument("--no-pair", action="store_true",
                   help="run the two PGD attacks as separate passes (SearchConfig.pair_attacks=False)")
    p.add_argument("--no-embed", action="store_true",
                   help="run the fused cells' 3x3 depthwise kernels at their own size, not embedded in 5x5 ones")
    p.add_argument("--worker", choices=("second", "first"), default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    shape = SHAPES[a.shape]
    if a.worker is not None:
        torch.set_num_threads(a.threads[0])
        _fused_cell.EMBED_3X3 = not a.no_embed
        print(json.dumps(time_ours(a.worker, shape, a.steps, device, a.compile, not a.no_pair)), flush=True)
        return 0
    meta = {"shape": a.shape, **shape, "embed_3x3": not a.no_embed, "threads": a.threads, "device": str(device), "cpu": cpu_model(),
            "torch": torch.__version__}
    print(json.dumps({"meta": meta}), flush=True)
    reference = not a.no_reference
    missing = _check_reference(a.mirror) if reference else []
    if missing:
        print(json.dumps({"reference": "skipped", "missing": missing}), flush=True)
        reference = False
    runs: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in range(a.rounds):
        for threads in a.threads:
            for order in a.order:
                res = time_ours_subprocess(order, a.shape, a.steps, threads, a.device, a.compile, not a.no_pair,
                                           not a.no_embed)
                runs.setdefault(("arnas-ray", order, threads), []).append(res)
                print(json.dumps({"round": r, "threads": threads, **res}), flush=True)
            if reference:
                res = time_reference(shape, a.ref_steps, threads, a.mirror)
                runs.setdefault(("reference", "second", threads), []).append(res)
                print(json.dumps({"round": r, **res}), flush=True)
    _summarise(runs, a, meta, shape)
    return 0


if __name__ == "__main__":
    sys.exit(main())
