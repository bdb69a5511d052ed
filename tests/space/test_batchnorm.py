"""Training-mode batch norm through the compiled kernels (``_batchnorm``, ``_kernels.bn_*``):
equal to PyTorch's ``native_batch_norm`` (outputs, statistics, every gradient, double backward),
used only where it applies, and PyTorch's own kernel everywhere else."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from arnas_ray.space import _kernels
from arnas_ray.space._batchnorm import batch_norm_train

needs_kernel = pytest.mark.skipif(not _kernels.available(), reason="no compiled kernel here (no cc or no AVX2)")
CL = torch.channels_last
EPS = 1e-5


def _inputs(shape: tuple[int, ...], affine: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 3 + 1.5).contiguous(memory_format=CL)
    C = shape[1]
    w = torch.rand(C, generator=g) + 0.5 if affine in ("weight", "both") else None
    b = torch.randn(C, generator=g) if affine == "both" else None
    return x, w, b


def _grads(fn, x, w, b, gy):  # type: ignore[no-untyped-def]
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, w, b)]
    y, mean, invstd = fn(leaves[0], leaves[1], leaves[2], EPS)
    grads = torch.autograd.grad(y, [t for t in leaves if t is not None], gy)
    return y.detach(), mean, invstd, grads


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape, affine", [
    ((16, 16, 16, 16), "weight"),  # 4096 rows: several blocks (and threads), two channel vectors
    ((4, 8, 5, 7), "none"),        # an odd number of rows, fewer than one block
    ((3, 40, 6, 6), "both"),       # five channel vectors (one chunk of four, then one)
    ((2, 256, 4, 4), "weight"),    # the widest the kernel takes
    ((1, 8, 1, 1), "both"),        # one row: zero variance
])
def test_kernel_equals_native(shape: tuple[int, ...], affine: str, threads: int) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x, w, b = _inputs(shape, affine)
        gy = torch.randn(shape, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=CL)
        assert _kernels.bn_forward(x, w, b, EPS) is not None  # the kernel path is the one under test
        ours = _grads(batch_norm_train, x, w, b, gy)
        ref = _grads(lambda *a: torch.native_batch_norm(a[0], a[1], a[2], None, None, True, 0.0, a[3]), x, w, b, gy)
    finally:
        torch.set_num_threads(before)
    y, mean, invstd, grads = ours
    assert y.is_contiguous(memory_format=CL)
    torch.testing.assert_close(mean, ref[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(invstd, ref[2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y, ref[0], rtol=1e-4, atol=2e-4)
    assert len(grads) == len(ref[3])
    for a, r in zip(grads, ref[3]):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=2e-4)


@needs_kernel
def test_gradient_in_any_layout_and_only_what_is_asked() -> None:
    x, w, _ = _inputs((8, 16, 6, 6), "weight")
    gy = torch.randn(8, 16, 6, 6)  # plain NCHW: copied to channels_last by the backward
    xs = x.detach().clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(batch_norm_train(xs, w, None, EPS)[0], xs, gy)  # w needs no gradient
    xr = x.detach().clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(torch.native_batch_norm(xr, w, None, None, None, True, 0.0, EPS)[0], xr, gy)
    torch.testing.assert_close(gx, ref, rtol=1e-4, atol=2e-4)
    out = _kernels.bn_backward(gy, x, *batch_norm_train(x, w, None, EPS)[1:], w, (False, True, False))
    assert out is not None and out[0] is None and out[2] is None and out[1] is not None


def _second(fn: Callable[..., tuple[torch.Tensor, ...]], x: torch.Tensor,
            w: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """Gradients (input, weight) of a function of the first-order gradients of ``fn``'s output."""
    assert w is not None
    xs, ws = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    y = fn(xs, ws, None, EPS)[0]
    gx, gw = torch.autograd.grad((y.sin() * y).sum(), (xs, ws), create_graph=True)
    return torch.autograd.grad(gx.pow(2).sum() + gw.pow(2).sum(), (xs, ws))


@needs_kernel
def test_double_backward_is_pytorchs() -> None:
    """A differentiable backward (create_graph) runs PyTorch's, whose double backward is exact."""
    x, w, _ = _inputs((4, 8, 5, 5), "weight", seed=3)
    ours = _second(batch_norm_train, x, w)
    ref = _second(lambda *a: torch.native_batch_norm(a[0], a[1], a[2], None, None, True, 0.0, a[3]), x, w)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("case", ["float64", "nchw", "channels_12", "channels_264", "disabled"])
def test_other_inputs_run_pytorchs_kernel(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    C = {"channels_12": 12, "channels_264": 264}.get(case, 16)
    x = torch.randn(2, C, 3, 3, dtype=torch.float64 if case == "float64" else torch.float32)
    if case != "nchw":
        x = x.contiguous(memory_format=CL)
    if case == "disabled":
        monkeypatch.setenv(_kernels.ENV, "0")
    assert _kernels.bn_library(x) is None
    calls: list[int] = []
    monkeypatch.setattr(_kernels, "bn_forward", lambda *a: calls.append(1))
    y, mean, invstd = batch_norm_train(x, None, None, EPS)
    ref = torch.native_batch_norm(x, None, None, None, None, True, 0.0, EPS)
    assert not calls
    assert torch.equal(y, ref[0]) and torch.equal(mean, ref[1]) and torch.equal(invstd, ref[2])


def _relu_ref(x, w, b, eps):  # type: ignore[no-untyped-def]
    y, mean, invstd = torch.native_batch_norm(x, w, b, None, None, True, 0.0, eps)
    return torch.relu(y), mean, invstd


def _with_relu(x, w, b, eps):  # type: ignore[no-untyped-def]
    return batch_norm_train(x, w, b, eps, relu=True)


@pytest.mark.parametrize("native", [True, False], ids=["kernel", "pytorch"])
@pytest.mark.parametrize("shape, affine", [((16, 16, 16, 16), "weight"), ((3, 40, 6, 6), "both"), ((4, 8, 5, 7), "none")])
def test_fused_relu_equals_relu_of_batch_norm(shape: tuple[int, ...], affine: str, native: bool,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``relu=True``: the output, statistics and every gradient of ``F.relu(batch_norm(x))``, with
    the kernels (mask applied inside their passes) and without them."""
    if native and not _kernels.available():
        pytest.skip("no compiled kernel here (no cc or no AVX2)")
    if not native:
        monkeypatch.setenv(_kernels.ENV, "0")
    x, w, b = _inputs(shape, affine, seed=5)
    gy = torch.randn(shape, generator=torch.Generator().manual_seed(2)).contiguous(memory_format=CL)
    if native:
        assert _kernels.bn_forward(x, w, b, EPS, relu=True) is not None
    y, mean, invstd, grads = _grads(_with_relu, x, w, b, gy)
    ref = _grads(_relu_ref, x, w, b, gy)
    assert (y == 0).float().mean() > 0.2 and (y > 0).float().mean() > 0.2  # both sides of the kink
    torch.testing.assert_close(mean, ref[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(invstd, ref[2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y, ref[0], rtol=1e-4, atol=2e-4)
    for a, r in zip(grads, ref[3]):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=2e-4)


@needs_kernel
def test_fused_relu_mask_in_the_kernel() -> None:
    """The backward with the ReLU output equals the plain backward of the masked gradient (a
    gradient is kept where the output is not <= 0, as ``threshold_backward``: NaN keeps it)."""
    x, w, _ = _inputs((8, 16, 6, 6), "weight", seed=7)
    y, mean, invstd = batch_norm_train(x, w, None, EPS, relu=True)
    assert bool((y >= 0).all())
    y_nan = y.clone()
    y_nan[0, 3, 2, 2] = float("nan")  # as if the forward had produced a NaN there
    gy = torch.randn(x.shape, generator=torch.Generator().manual_seed(3)).contiguous(memory_format=CL)
    masked = _kernels.bn_backward(gy, x, mean, invstd, w, (True, True, False), y_nan)
    plain = _kernels.bn_backward(torch.ops.aten.threshold_backward(gy, y_nan, 0), x, mean, invstd, w,
                                 (True, True, False))
    assert masked is not None and plain is not None
    for a, r in zip(masked[:2], plain[:2]):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)
    unmasked = _kernels.bn_backward(gy, x, mean, invstd, w, (True, False, False))
    assert unmasked is not None and not torch.allclose(unmasked[0], masked[0])  # the mask did something


def test_fused_relu_double_backward() -> None:
    """A differentiable backward of ``relu=True`` (``order: exact``) is PyTorch's, exact."""
    x, w, _ = _inputs((4, 8, 5, 5), "weight", seed=4)
    for a, r in zip(_second(_with_relu, x, w), _second(_relu_ref, x, w)):
        torch.testing.assert_close(a, r, rtol=1e-3, atol=1e-3)
