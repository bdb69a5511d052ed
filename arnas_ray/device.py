"""Pick the compute device once; everything else receives it as an argument.

Also the one process-wide CPU setting a search or a retraining makes: :func:`keep_heap`.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

import torch

__all__ = ["HEAP_ENV", "keep_heap", "pick_device"]

#: "0" in the environment: :func:`keep_heap` leaves the C heap's settings alone
HEAP_ENV = "ARNAS_RAY_KEEP_HEAP"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def pick_device(name: str | None = None) -> torch.device:
    """``cuda`` when available, else ``cpu``; an explicit ``name`` ("cpu", "cuda:1") wins.

    Raises:
        ValueError: ``name`` asks for CUDA on a machine without it.
    """
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was requested but CUDA is not available; use 'cpu' or 'auto'")
    return dev


@functools.lru_cache(maxsize=1)
def keep_heap() -> bool:
    """Have glibc's ``malloc`` keep the memory PyTorch frees for the next tensors (once per
    process; returns whether the settings took).

    PyTorch's CPU tensors come straight from ``malloc``. With glibc's defaults, blocks above a
    (self-adjusting) size are mapped and unmapped by the kernel, and freed memory at the top of
    the heap is given back: a search step, which allocates and frees tensors of 1-12 MB
    thousands of times, then faults about 70 MB of fresh pages per PGD pass (zeroed by the
    kernel, a few microseconds per page in a virtual machine). Here every block comes from the
    heap and the heap is never trimmed, so the process holds on to its peak memory, which it
    reaches again at the next step anyway. On the 2-core AMD EPYC of the development machines
    a paired PGD pass took 7-8% less time (``benchmarks/RESULTS.md``).

    Does nothing (returns False) off Linux, without glibc, or with :data:`HEAP_ENV` set to "0".
    """
    if os.environ.get(HEAP_ENV, "1") == "0" or platform.system() != "Linux":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # older glibc cap the mapping threshold at 32 MiB: larger blocks are then still mapped
    mapped = mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 or mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
    return mapped and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
