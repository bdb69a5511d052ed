"""Device choice and the kept C heap (each heap check in its own process: mallopt is process-wide)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from arnas_ray.device import HEAP_ENV, pick_device

# allocates and frees tensors of 0.25-3 MiB ten times, as a search step does (sizes mixed), and
# prints the page faults of the last nine rounds
_FAULTS = """
import json, resource, sys, torch
from arnas_ray.device import keep_heap
kept = keep_heap() if sys.argv[1] == "keep" else False
def run():
    ts = [torch.empty(n << 16).fill_(1.0) for n in (1, 2, 4, 8, 3, 12)]
    x = ts[0]
    for t in ts[1:]:
        x = t[: x.numel()] + x
    del ts, x
run()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    run()
print(json.dumps({"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(mode: str, env: dict[str, str] | None = None) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0].startswith("glibc"),
                    reason="glibc's mallopt")
def test_kept_heap_reuses_freed_memory() -> None:
    # a fixed mmap threshold (glibc's default starts at 128 KiB but rises with the blocks freed,
    # which made the default's faults vary 2,000-15,000 between runs): the default maps every
    # block afresh; keep_heap's mallopt overrides the tunable
    fixed = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}
    default, kept = _faults("default", fixed), _faults("keep", fixed)
    assert default["kept"] is False and kept["kept"] is True
    # by default the larger blocks are mapped afresh (and zeroed by the kernel) every round;
    # kept, most come back from the heap
    assert int(kept["faults"]) < int(default["faults"]) // 2, (default, kept)  # type: ignore[call-overload]


def test_kept_heap_opt_out() -> None:
    assert _faults("keep", {HEAP_ENV: "0"})["kept"] is False
