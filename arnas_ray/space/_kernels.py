"""Optional compiled CPU kernels: the weight gradient of a depthwise convolution,
training-mode batch norm of narrow channels_last tensors (:mod:`arnas_ray.space._batchnorm`)
and grouped 1x1 convolutions (:mod:`arnas_ray.space._pointwise`).

oneDNN's CPU weight gradient of a depthwise convolution runs at a fraction of its forward's
rate: for 5x5 kernels at the supernet's fused widths (float32, channels_last, 1 thread) it
was 3-4x slower than this kernel, for dilated ones (against the grouped-convolution path of
:mod:`arnas_ray.space._dwconv`) 2-5x (``benchmarks/RESULTS.md``); the search step's weight
passes spend much of their time there. PyTorch's channels_last batch norm is slow for few
channels: at 8-16 channels (batch 16, 32x32, 1 thread) its forward and backward took 2.5-4x
the time of :func:`bn_forward` and :func:`bn_backward`, at 32-256 channels 1.3-2.5x
(``benchmarks/bn_kernel.py``, ``benchmarks/RESULTS.md``). The C source (:file:`csrc/kernels.c`: AVX2 + FMA,
threads over channel blocks) is compiled once per machine with the system C compiler into a
cache folder and loaded with :mod:`ctypes`. It is built with OpenMP where the compiler can, so
that its threads are those of the OpenMP runtime PyTorch has already loaded (``libgomp.so.1``
is the same library, found loaded by its name): PyTorch's workers spin for a while after each
operation, and threads of the kernel's own competed with them for the cores (at 2 threads the
kernel's calls in a search step took 0.566 s with POSIX threads, 0.345 s on one thread and
0.283 s on PyTorch's; ``benchmarks/RESULTS.md``). Otherwise POSIX threads.

Where it cannot be used, everything runs as before (:mod:`arnas_ray.space._dwconv`): no C
compiler, a CPU without AVX2, not Linux on x86-64, ``ARNAS_RAY_NATIVE=0`` in the
environment, another dtype than float32, or other memory than channels_last. The build goes
to ``$ARNAS_RAY_CACHE/native`` (default ``~/.cache/arnas-ray/native``), named by a hash of
the source, the compiler and its flags, and is written to a temporary name and renamed, so
that concurrent workers on one machine never load half a file.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["BN_MAX_CHANNELS", "ENV", "available", "bn_backward", "bn_forward", "bn_library", "grad_weight", "library",
           "pw_forward", "pw_grad_input", "pw_grad_weight", "pw_library"]

ENV = "ARNAS_RAY_NATIVE"  # "0": never use the compiled kernel
SOURCE = Path(__file__).with_name("csrc") / "kernels.c"
FLAGS = ("-O3", "-mavx2", "-mfma", "-fno-math-errno", "-shared", "-fPIC", "-pthread")
OPENMP = ("-fopenmp",)  # tried first, then FLAGS alone
#: below this many multiply-adds the kernel runs on one thread (a thread costs tens of microseconds)
THREAD_MIN_MACS = 1 << 21
#: batch norms over more channels stay with PyTorch's kernel (as fast or faster there: it
#: reads a wide tensor fewer times)
BN_MAX_CHANNELS = 256
_log = logging.getLogger(__name__)


def _cache_dir() -> Path:
    root = os.environ.get("ARNAS_RAY_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "arnas-ray") / "native"


def _build(cc: str, flags: tuple[str, ...] = FLAGS, *, quiet: bool = False) -> Path | None:
    """The library compiled with ``flags`` (built now if this machine's cache lacks it), or None
    (with a warning unless ``quiet``)."""
    src = SOURCE.read_bytes()
    tag = hashlib.sha256(b"\0".join([src, cc.encode(), *(f.encode() for f in flags)])).hexdigest()[:16]
    lib = _cache_dir() / f"kernels-{tag}.so"
    if lib.exists():
        return lib
    tmp = lib.with_name(f".{lib.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        lib.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([cc, *flags, "-o", str(tmp), str(SOURCE)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            if quiet:
                return None
            _log.warning("arnas-ray: %s could not compile %s (%s); using PyTorch's kernels",
                         cc, SOURCE.name, (done.stderr.strip().splitlines() or ["no message"])[-1])
            return None
        os.replace(tmp, lib)
    except (OSError, subprocess.SubprocessError) as exc:
        if not quiet:
            _log.warning("arnas-ray: no compiled kernels (%s); using PyTorch's", exc)
        return None
    finally:
        tmp.unlink(missing_ok=True)
    return lib


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The loaded kernel library, or None where it cannot be used (module docstring)."""
    if os.environ.get(ENV, "1") == "0":
        return None
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    path = _build(cc, FLAGS + OPENMP, quiet=True) or _build(cc)
    return None if path is None else _load(path)


def _load(path: Path) -> ctypes.CDLL | None:
    """A built library, loaded and typed (None, with a warning, where it cannot be loaded)."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        _log.warning("arnas-ray: cannot load %s (%s); using PyTorch's kernels", path, exc)
        return None
    lib.dw_grad_weight.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 11
    lib.dw_grad_weight.restype = ctypes.c_int
    lib.bn_forward.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 2 + [ctypes.c_double] + [ctypes.c_int64] * 2
    lib.bn_forward.restype = ctypes.c_int
    lib.bn_backward.argtypes = [ctypes.c_void_p] * 9 + [ctypes.c_int64] * 3
    lib.bn_backward.restype = ctypes.c_int
    for fn in (lib.pw_forward, lib.pw_grad_input, lib.pw_grad_weight):
        fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 5
        fn.restype = ctypes.c_int
    return lib


def available() -> bool:
    """Whether the compiled kernel is in use on this machine."""
    return _enabled() is not None


def _threads(macs: int) -> int:
    return torch.get_num_threads() if macs >= THREAD_MIN_MACS else 1


def grad_weight(go: Tensor, x: Tensor, k: int, stride: int, padding: int, dilation: int) -> Tensor | None:
    """The weight gradient ``[C, 1, k, k]`` of ``F.conv2d(x, w, None, stride, padding, dilation,
    groups=C)`` for the output gradient ``go``, or None where the kernel does not apply (then
    the caller computes it): CPU float32 tensors, ``x`` in channels_last memory; not differentiable."""
    if os.environ.get(ENV, "1") == "0" or x.dtype != torch.float32 or go.dtype != torch.float32:
        return None
    if x.device.type != "cpu" or go.device.type != "cpu" or x.dim() != 4 or k > 16:
        return None
    cl = torch.channels_last
    lib = library()
    if lib is None or not x.is_contiguous(memory_format=cl):
        return None
    go = go.contiguous(memory_format=cl)  # a copy where it is not: far cheaper than the native path
    N, C, H, W = x.shape
    OH, OW = go.shape[2], go.shape[3]
    gw = torch.empty(C, 1, k, k, dtype=torch.float32)
    threads = _threads(N * C * OH * OW * k * k)
    if lib.dw_grad_weight(x.data_ptr(), go.data_ptr(), gw.data_ptr(), N, H, W, C, OH, OW, k, stride, padding,
                          dilation, threads) != 0:
        return None
    return gw


def _cl_float32(x: Tensor) -> bool:
    """Whether ``x`` is a non-empty 4-D float32 CPU tensor in channels_last memory."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and x.numel() > 0 \
        and x.is_contiguous(memory_format=torch.channels_last)


def _enabled() -> ctypes.CDLL | None:
    """The library, unless ``ARNAS_RAY_NATIVE=0`` (read at every call: tests switch it)."""
    return None if os.environ.get(ENV, "1") == "0" else library()


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def bn_library(x: Tensor, *params: Tensor | None) -> ctypes.CDLL | None:
    """The library where the batch-norm kernels apply to ``x`` and its per-channel ``params``:
    CPU float32, channels_last, a multiple of 8 and at most :data:`BN_MAX_CHANNELS` channels."""
    if not _cl_float32(x) or x.shape[1] % 8 or x.shape[1] > BN_MAX_CHANNELS:
        return None
    C = x.shape[1]
    if any(p is not None and (p.dtype != torch.float32 or p.device.type != "cpu" or not p.is_contiguous()
                              or p.shape != (C,)) for p in params):
        return None
    return _enabled()


def bn_forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, lib: ctypes.CDLL | None = None,
               relu: bool = False) -> tuple[Tensor, Tensor, Tensor] | None:
    """``torch.native_batch_norm(x, weight, bias, None, None, True, 0.0, eps)`` (output, batch
    mean, batch inverse standard deviation) by the compiled kernel, or None where it does not
    apply (:func:`bn_library`; a caller that has just asked passes its answer as ``lib``); not
    differentiable. With ``relu`` the output is ``relu`` of it (one pass)."""
    lib = lib or bn_library(x, weight, bias)
    if lib is None:
        return None
    C = x.shape[1]
    M = x.numel() // C
    y = torch.empty_like(x, memory_format=torch.channels_last)
    mean, invstd = torch.empty(C), torch.empty(C)
    if lib.bn_forward(x.data_ptr(), y.data_ptr(), _ptr(weight), _ptr(bias), mean.data_ptr(), invstd.data_ptr(),
                      M, C, eps, _threads(M * C * 32), int(relu)) != 0:
        return None
    return y, mean, invstd


def bn_backward(gy: Tensor, x: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None,
                mask: tuple[bool, bool, bool], y: Tensor | None = None
                ) -> tuple[Tensor | None, Tensor | None, Tensor | None] | None:
    """The gradients (input, weight, bias; each only where ``mask`` asks) of :func:`bn_forward`
    for the output gradient ``gy``, or None where the kernel does not apply; not differentiable.
    ``y``: the output of a forward with ``relu``, whose mask applies to ``gy`` first."""
    lib = bn_library(x, weight, mean, invstd)
    if lib is None or gy.shape != x.shape or gy.dtype != x.dtype:
        return None
    if y is not None and (y.shape != x.shape or not _cl_float32(y)):
        return None
    gy = gy.contiguous(memory_format=torch.channels_last)
    C = x.shape[1]
    M = x.numel() // C
    gx = torch.empty_like(x, memory_format=torch.channels_last) if mask[0] else None
    gw, gb = (torch.empty(C) if m else None for m in mask[1:])
    if lib.bn_backward(gy.data_ptr(), x.data_ptr(), mean.data_ptr(), invstd.data_ptr(), _ptr(weight), _ptr(gx),
                       _ptr(gw), _ptr(gb), _ptr(y), M, C, _threads(M * C * 32)) != 0:
        return None
    return gx, gw, gb


def pw_library(x: Tensor, w: Tensor, groups: int) -> ctypes.CDLL | None:
    """The library where the grouped 1x1 convolution kernels apply to ``x`` and the weight ``w``
    (``[G*Co, Ci, 1, 1]``, ``groups`` = G): CPU float32, ``x`` channels_last, ``w`` contiguous,
    ``Co`` a multiple of 8 (the input gradient also needs ``Ci`` a multiple of 8)."""
    if not _cl_float32(x) or w.device.type != "cpu" or w.dtype != torch.float32 or w.dim() != 4:
        return None
    if (w.shape[0] // groups) % 8 or w.shape[0] % groups or x.shape[1] != w.shape[1] * groups or not w.is_contiguous():
        return None
    return _enabled()


def _grad_cl(gy: Tensor) -> Tensor | None:
    """An output gradient as the kernels read it (float32 CPU, channels_last: a copy where it is
    not), or None where they cannot."""
    if gy.dtype != torch.float32 or gy.device.type != "cpu":
        return None
    return gy.contiguous(memory_format=torch.channels_last)


def _pw_sizes(x: Tensor, w: Tensor, groups: int) -> tuple[int, int, int, int]:
    N, _, H, W = x.shape
    return N * H * W, groups, w.shape[1], w.shape[0] // groups


def pw_forward(x: Tensor, w: Tensor, groups: int, lib: ctypes.CDLL) -> Tensor | None:
    """``torch.convolution`` of ``x`` with the 1x1 weight ``w`` (stride 1, no padding, ``groups``)
    by the compiled kernel (``lib`` from :func:`pw_library`), channels_last, or None; not
    differentiable."""
    M, G, Ci, Co = _pw_sizes(x, w, groups)
    y = torch.empty(x.shape[0], G * Co, x.shape[2], x.shape[3], memory_format=torch.channels_last)
    if lib.pw_forward(x.data_ptr(), w.data_ptr(), y.data_ptr(), M, G, Ci, Co, _threads(M * G * Ci * Co)) != 0:
        return None
    return y


def pw_grad_input(gy: Tensor, w: Tensor, shape: torch.Size, groups: int, lib: ctypes.CDLL) -> Tensor | None:
    """The input gradient (of ``shape``) of :func:`pw_forward` for the output gradient ``gy``,
    or None where the kernel does not apply; not differentiable."""
    cl = _grad_cl(gy) if shape[1] % 8 == 0 else None
    if cl is None:
        return None
    gy = cl
    G, Ci, Co = groups, w.shape[1], w.shape[0] // groups
    M = gy.numel() // (G * Co)
    gx = torch.empty(shape, memory_format=torch.channels_last)
    if lib.pw_grad_input(gy.data_ptr(), w.data_ptr(), gx.data_ptr(), M, G, Ci, Co, _threads(M * G * Ci * Co)) != 0:
        return None
    return gx


def pw_grad_weight(gy: Tensor, x: Tensor, w: Tensor, groups: int, lib: ctypes.CDLL) -> Tensor | None:
    """The weight gradient (``w``'s shape) of :func:`pw_forward` for the output gradient ``gy``,
    or None where the kernel does not apply; not differentiable."""
    cl = _grad_cl(gy)
    if cl is None:
        return None
    gy = cl
    M, G, Ci, Co = _pw_sizes(x, w, groups)
    gw = torch.empty(w.shape)
    if lib.pw_grad_weight(gy.data_ptr(), x.data_ptr(), gw.data_ptr(), M, G, Ci, Co, _threads(M * G * Ci * Co)) != 0:
        return None
    return gw
