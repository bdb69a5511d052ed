"""The compiled depthwise weight-gradient kernel (``_kernels``): exact against float64 autograd,
used by ``depthwise_conv2d``'s backward only where it applies, built atomically, and a clean
fallback where it cannot be built."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from arnas_ray.space import _kernels
from arnas_ray.space._dwconv import depthwise_conv2d

needs_kernel = pytest.mark.skipif(not _kernels.available(), reason="no compiled kernel here (no cc or no AVX2)")
CL = torch.channels_last


def _reference_grad_weight(go: torch.Tensor, x: torch.Tensor, k: int, stride: int, padding: int,
                           dilation: int) -> torch.Tensor:
    xr = x.detach().double()
    w = torch.zeros(x.shape[1], 1, k, k, dtype=torch.float64, requires_grad=True)
    out = F.conv2d(xr, w, None, stride, padding, dilation, x.shape[1])
    (gw,) = torch.autograd.grad(out, w, go.double())
    return gw


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("C, size, k, stride, dilation, padding", [
    (16, 9, 5, 1, 1, 2),    # two channel blocks
    (24, 8, 5, 2, 1, 2),    # strided
    (8, 10, 5, 1, 2, 4),    # dilated
    (20, 7, 5, 2, 2, 4),    # strided and dilated, 4 channels past the last block
    (13, 6, 3, 1, 2, 2),    # dilated 3x3, scalar tail
    (4, 5, 7, 1, 1, 3),     # any kernel size, no full block
    (8, 3, 5, 1, 2, 4),     # every tap reaches past the borders
    (16, 8, 3, 1, 1, 0),    # no padding
])
def test_grad_weight_matches_float64_autograd(threads, C, size, k, stride, dilation, padding):
    torch.manual_seed(C * 31 + size)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    monkey = pytest.MonkeyPatch()
    monkey.setattr(_kernels, "THREAD_MIN_MACS", 0)  # threads split even these tiny shapes
    try:
        x = torch.randn(3, C, size, size + 1).contiguous(memory_format=CL)
        out_shape = F.conv2d(x, torch.zeros(C, 1, k, k), None, stride, padding, dilation, C).shape
        go = torch.randn(out_shape)  # plain NCHW: the kernel takes it in channels_last itself
        gw = _kernels.grad_weight(go, x, k, stride, padding, dilation)
    finally:
        torch.set_num_threads(prev)
        monkey.undo()
    assert gw is not None and gw.shape == (C, 1, k, k) and gw.dtype == torch.float32
    ref = _reference_grad_weight(go, x, k, stride, padding, dilation)
    torch.testing.assert_close(gw.double(), ref, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_grad_weight_declines_what_it_does_not_handle():
    x = torch.randn(2, 8, 6, 6)
    go = torch.randn(2, 8, 6, 6)
    assert _kernels.grad_weight(go, x, 3, 1, 1, 1) is None  # NCHW input
    xc = x.contiguous(memory_format=CL)
    assert _kernels.grad_weight(go.double(), xc.double(), 3, 1, 1, 1) is None  # float64
    assert _kernels.grad_weight(go, xc, 3, 1, 1, 1) is not None


@needs_kernel
def test_depthwise_backward_uses_the_kernel_and_matches_the_fallback(monkeypatch):
    calls = []
    real = _kernels.grad_weight

    def counted(*args):
        out = real(*args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(_kernels, "grad_weight", counted)
    torch.manual_seed(0)
    x = torch.randn(4, 16, 9, 9).contiguous(memory_format=CL).requires_grad_()
    w = torch.randn(16, 1, 5, 5, requires_grad=True)
    go = torch.randn(4, 16, 5, 5)

    def grads():
        out = depthwise_conv2d(x, w, 2, 4, 2)
        return torch.autograd.grad(out, (x, w), go)

    gx, gw = grads()
    assert calls == [True]
    monkeypatch.setenv(_kernels.ENV, "0")
    fx, fw = grads()
    assert calls == [True, False]  # switched off: the PyTorch paths
    torch.testing.assert_close(gx, fx, rtol=0, atol=0)  # the input gradient does not change path
    torch.testing.assert_close(gw, fw, rtol=1e-5, atol=1e-5)
    # undilated 3x3: oneDNN's own weight gradient, not the kernel
    monkeypatch.delenv(_kernels.ENV)
    w3 = torch.randn(16, 1, 3, 3, requires_grad=True)
    torch.autograd.grad(depthwise_conv2d(x, w3, 1, 1, 1).sum(), w3)
    assert len(calls) == 2


@needs_kernel
def test_double_backward_keeps_the_differentiable_path(monkeypatch):
    """``create_graph`` (the exact hypergradient): the kernel is not differentiable, so it is not
    used, and the second derivatives match float64."""
    calls = []
    monkeypatch.setattr(_kernels, "grad_weight", lambda *a: calls.append(1))
    torch.manual_seed(1)
    x = torch.randn(2, 8, 7, 7).contiguous(memory_format=CL).requires_grad_()
    w = torch.randn(8, 1, 5, 5, requires_grad=True)
    go = torch.randn(2, 8, 7, 7)

    def second(xx, ww, conv):
        gx, gw = torch.autograd.grad(conv(xx, ww), (xx, ww), go.to(xx.dtype), create_graph=True)
        return torch.autograd.grad((gx ** 2).sum() + (gw ** 2).sum(), (xx, ww))

    ours = second(x, w, lambda a, b: depthwise_conv2d(a, b, 1, 2, 1))
    xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = second(xr, wr, lambda a, b: F.conv2d(a, b, None, 1, 2, 1, 8))
    assert calls == []
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


@pytest.fixture
def cc(tmp_path, monkeypatch) -> str:
    """The system C compiler, with the build cache in ``tmp_path``."""
    monkeypatch.setenv("ARNAS_RAY_CACHE", str(tmp_path))
    found = _kernels.shutil.which("cc") or _kernels.shutil.which("gcc")
    assert found is not None
    return found


@needs_kernel
def test_build_is_atomic_and_cached(tmp_path, cc):
    first = _kernels._build(cc)
    assert first is not None and first.parent == tmp_path / "native"
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary file left
    stamp = first.stat().st_mtime_ns
    assert _kernels._build(cc) == first and first.stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_a_failing_compiler_falls_back_with_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ARNAS_RAY_CACHE", str(tmp_path))
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\necho 'cc: error: no such compiler' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    supported = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") and \
        _kernels.platform.machine() == "x86_64" and _kernels.platform.system() == "Linux" and \
        _kernels.os.environ.get(_kernels.ENV, "1") != "0"  # switched off: it never tries to build
    _kernels.library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=_kernels.__name__):
            assert _kernels.library() is None
        messages = [r.getMessage() for r in caplog.records]
        if supported:  # it tried, said so once, and left nothing behind
            assert len(messages) == 1 and "no such compiler" in messages[0], messages
            assert list((tmp_path / "native").iterdir()) == []
        x = torch.randn(2, 8, 6, 6).contiguous(memory_format=CL)
        assert _kernels.grad_weight(torch.randn(2, 8, 6, 6), x, 5, 1, 2, 1) is None
        # the depthwise convolution still has its gradients (the PyTorch paths)
        w = torch.randn(8, 1, 5, 5, requires_grad=True)
        (gw,) = torch.autograd.grad(depthwise_conv2d(x, w, 1, 2, 1).sum(), w)
        torch.testing.assert_close(gw.double(), _reference_grad_weight(torch.ones(2, 8, 6, 6), x, 5, 1, 2, 1),
                                   rtol=1e-5, atol=1e-5)
    finally:
        _kernels.library.cache_clear()


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv(_kernels.ENV, "0")
    assert not _kernels.available()
    x = torch.randn(1, 8, 4, 4).contiguous(memory_format=CL)
    assert _kernels.grad_weight(torch.randn(1, 8, 4, 4), x, 5, 1, 2, 1) is None


def _check_at_two_threads(shape: tuple[int, int, int, int], k: int, padding: int, dilation: int, seed: int) -> None:
    """The kernel's gradient at 2 threads (stride 1) equals float64 autograd's."""
    g = torch.Generator().manual_seed(seed)
    x, go = (torch.randn(*shape, generator=g).contiguous(memory_format=CL) for _ in range(2))
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gw = _kernels.grad_weight(go, x, k, 1, padding, dilation)
    finally:
        torch.set_num_threads(prev)
    assert gw is not None
    torch.testing.assert_close(gw.double(), _reference_grad_weight(go, x, k, 1, padding, dilation),
                               rtol=1e-4, atol=1e-4)


@needs_kernel
def test_the_kernel_uses_the_openmp_runtime_pytorch_loaded(monkeypatch):
    """Built with OpenMP, the library must not bring a second OpenMP runtime into the process:
    its threads are those of PyTorch's (one libgomp mapped, PyTorch's)."""
    monkeypatch.setattr(_kernels, "THREAD_MIN_MACS", 0)  # threads split even this tiny shape
    _check_at_two_threads((4, 16, 12, 12), 5, 2, 1, seed=0)
    maps = Path("/proc/self/maps").read_text().splitlines()
    runtimes = {Path(line.split()[-1]).resolve() for line in maps if "libgomp" in line.split()[-1]}
    assert len(runtimes) <= 1, runtimes


@needs_kernel
def test_the_posix_threads_build_computes_the_same(cc, monkeypatch):
    """The build without OpenMP (compilers that lack it) splits the channels over POSIX threads."""
    path = _kernels._build(cc)  # FLAGS alone: no -fopenmp
    assert path is not None
    lib = _kernels._load(path)
    assert lib is not None
    monkeypatch.setattr(_kernels, "library", lambda: lib)
    monkeypatch.setattr(_kernels, "THREAD_MIN_MACS", 0)
    _check_at_two_threads((3, 24, 10, 10), 3, 2, 2, seed=1)
