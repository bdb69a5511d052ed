"""Grouped 1x1 convolutions through the compiled kernels (``_pointwise``, ``_kernels.pw_*``):
equal to ``torch.convolution`` (output, input and weight gradients, double backward), used
only where they apply, and PyTorch's own convolution everywhere else."""

from __future__ import annotations

import pytest
import torch

from arnas_ray.space import _aten, _kernels
from arnas_ray.space._pointwise import pointwise_conv2d

needs_kernel = pytest.mark.skipif(not _kernels.available(), reason="no compiled kernel here (no cc or no AVX2)")
CL = torch.channels_last


def _native(x: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:
    return torch.convolution(x, w, None, (1, 1), (0, 0), (1, 1), False, (0, 0), groups)


def _inputs(N: int, cin: int, cout: int, groups: int, size: int, seed: int = 0,
            dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, cin, size, size + 1, generator=g, dtype=dtype).contiguous(memory_format=CL)
    w = torch.randn(cout, cin // groups, 1, 1, generator=g, dtype=dtype)
    gy = torch.randn(N, cout, size, size + 1, generator=g, dtype=dtype)
    return x, w, gy


def _grads(fn, x, w, gy, groups):  # type: ignore[no-untyped-def]
    xl, wl = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    y = fn(xl, wl, groups)
    gx, gw = torch.autograd.grad(y, [xl, wl], gy)
    return y.detach(), gx, gw


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 2e-5) -> bool:
    return bool((a - b).abs().max() <= tol * b.abs().max().clamp_min(1.0))


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("N, cin, cout, groups, size", [
    (16, 32, 32, 2, 16),  # one edge's conv on the PGD pair: 16 in and out per group, 4352 rows
    (3, 16, 16, 2, 5),    # 90 rows: not a multiple of the 8-row blocks
    (2, 48, 16, 2, 6),    # 24 -> 8 per group (a preprocessing conv)
    (2, 24, 48, 3, 4),    # 8 -> 16 per group
    (1, 40, 24, 1, 3),    # one group; 40 inputs (not a multiple of the 4-input tiles of 16 outputs)
])
def test_kernels_equal_torch_convolution(N, cin, cout, groups, size, threads):
    x, w, gy = _inputs(N, cin, cout, groups, size)
    lib = _kernels.pw_library(x, w, groups)
    assert lib is not None and _kernels.pw_forward(x, w, groups, lib) is not None  # the path under test
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours = _grads(pointwise_conv2d, x, w, gy, groups)
    finally:
        torch.set_num_threads(prev)
    ref = _grads(_native, x, w, gy, groups)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and _close(a, b)
    assert ours[0].is_contiguous(memory_format=CL) and ours[1].is_contiguous(memory_format=CL)


@needs_kernel
def test_kernel_paths_are_taken(monkeypatch):
    """Forward, input and weight gradients all run the kernels (counted), and a PGD-like pass
    (no weight gradient) keeps no input for the backward."""
    x, w, gy = _inputs(2, 16, 16, 2, 4)
    calls: list[str] = []
    for name in ("pw_forward", "pw_grad_input", "pw_grad_weight"):
        real = getattr(_kernels, name)
        monkeypatch.setattr(_kernels, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    xl, wl = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    torch.autograd.grad(pointwise_conv2d(xl, wl, 2), [xl, wl], gy)
    assert calls == ["pw_forward", "pw_grad_input", "pw_grad_weight"]
    y = pointwise_conv2d(xl, w, 2)  # the weight needs no gradient
    assert y.grad_fn is not None and y.grad_fn.saved_tensors[0] is None


@needs_kernel
def test_double_backward_matches_torch():
    """A gradient taken with ``create_graph`` (``order: exact``) differentiates like PyTorch's."""
    x, w, gy = _inputs(2, 16, 16, 2, 4)

    def second(fn):  # type: ignore[no-untyped-def]
        xl, wl = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        gx, gw = torch.autograd.grad((fn(xl, wl, 2) * gy).sum(), [xl, wl], create_graph=True)
        return torch.autograd.grad((gx ** 2).sum() + (gw ** 3).sum(), [xl, wl])

    for a, b in zip(second(pointwise_conv2d), second(_native)):
        assert _close(a, b, 1e-4)


@needs_kernel
def test_gradient_in_another_layout():
    x, w, gy = _inputs(2, 16, 16, 2, 4)
    xl = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(pointwise_conv2d(xl, w, 2), [xl], gy.contiguous())  # NCHW gradient
    (ref,) = torch.autograd.grad(_native(xl, w, 2), [xl], gy.contiguous())
    assert _close(gx, ref)


@pytest.mark.parametrize("case", ["float64", "nchw", "cout12", "strided_weight", "env_off"])
def test_other_inputs_run_pytorch(case, monkeypatch):
    """Where the kernels do not apply, ``pointwise_conv2d`` is ``torch.convolution`` itself."""
    x, w, gy = _inputs(2, 24, 24, 2, 4, dtype=torch.float64 if case == "float64" else torch.float32)
    if case == "nchw":
        x = x.contiguous()
    elif case == "cout12":
        w = w[:12]
    elif case == "strided_weight":
        w = torch.randn(24, 1, 1, 12).permute(0, 3, 1, 2)
    elif case == "env_off":
        monkeypatch.setenv(_kernels.ENV, "0")
    assert _kernels.pw_library(x, w, 2) is None
    monkeypatch.setattr(_kernels, "pw_forward", lambda *a: pytest.fail("kernel called"))
    assert torch.equal(pointwise_conv2d(x, w, 2), _native(x, w, 2))


@needs_kernel
def test_input_gradient_of_odd_inputs_runs_pytorch():
    """Twelve inputs per group: the forward runs the kernel, the input gradient PyTorch's."""
    x, w, gy = _inputs(2, 12, 16, 1, 5)
    ours, ref = _grads(pointwise_conv2d, x, w, gy, 1), _grads(_native, x, w, gy, 1)
    for a, b in zip(ours, ref):
        assert _close(a, b)


@needs_kernel
def test_aten_conv2d_routes_only_plain_1x1(monkeypatch):
    """``_aten.conv2d`` sends 1x1 convolutions without stride, padding or bias to the kernels."""
    x, w, _ = _inputs(2, 16, 16, 2, 6)
    seen: list[int] = []
    real = _kernels.pw_forward
    monkeypatch.setattr(_kernels, "pw_forward", lambda *a: seen.append(1) or real(*a))
    assert torch.allclose(_aten.conv2d(x, w, None, 1, 0, 1, 2), _native(x, w, 2), atol=1e-5)
    assert len(seen) == 1
    strided = _aten.conv2d(x, w, None, 2, 0, 1, 2)
    padded = _aten.conv2d(x, w, None, (1, 1), (1, 1), 1, 2)
    with_bias = _aten.conv2d(x, w, torch.ones(16), 1, 0, 1, 2)
    assert len(seen) == 1 and strided.shape[2] == 3 and padded.shape[2] == 8 and with_bias.shape[2] == 6
