"""Depthwise convolution with a faster CPU backward (same mathematics as ``F.conv2d``).

PyTorch's CPU (oneDNN) backward of a depthwise convolution is far slower than its forward,
most of all for dilated and 5x5 kernels: at C=8, 32x32, batch 16, channels_last, 1 thread the
input gradient of a dilated 5x5 depthwise conv took 4.3x its forward, and the weight gradient
of a 5x5 one 5x (``benchmarks/RESULTS.md``). The supernet spends most of a search step in
exactly these backward passes (every PGD step back-propagates to the input through every
depthwise conv of every edge), so on CPU :func:`depthwise_conv2d` computes them as forward
convolutions instead:

* input gradient, stride 1: the correlation of the output gradient with the flipped kernel
  (same padding and dilation); stride s: the same on the output gradient spread onto the
  input grid (zeros between), which replaces a strided transposed convolution;
* weight gradient of dilated kernels: a correlation of the (zero-padded) input with the output
  gradient used as the kernel (batch folded into groups), dilated by the stride and strided by
  the dilation (on the 2-core AMD EPYC of the development machines oneDNN's own weight gradient
  is as fast or faster for undilated kernels, above all for many channels, and is used there);
* the weight gradient of float32 channels_last inputs (except undilated 3x3 kernels), where
  the machine can build it, by the compiled kernel of :mod:`arnas_ray.space._kernels`
  (3-5x oneDNN's rate for 5x5 kernels, more for dilated ones); the paths above are the
  fallback and the differentiable path of a double backward.

The input is kept for the backward pass only when the weight gradient is asked for.

Both are exact up to float summation order; tests compare against ``F.conv2d``'s autograd in
float64, including double backward. On CUDA (cuDNN) the native backward is used.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from arnas_ray.space import _kernels
from arnas_ray.space._aten import conv2d
from arnas_ray.space._groups import channels_last, rep, reused

__all__ = ["depthwise_conv2d", "dw_conv"]


def _grad_input(go: Tensor, w: Tensor, shape: torch.Size, stride: int, padding: int, dilation: int) -> Tensor:
    C = shape[1]
    if stride != 1:
        fmt = torch.channels_last if channels_last(go) else torch.contiguous_format
        up = torch.empty(shape[0], C, shape[2], shape[3], dtype=go.dtype, device=go.device, memory_format=fmt).zero_()
        ho, wo = go.shape[2], go.shape[3]
        up[:, :, : stride * (ho - 1) + 1 : stride, : stride * (wo - 1) + 1 : stride] = go
        go = up
    # "same" correlation of the (spread) gradient with the flipped kernel; crop if the
    # forward's padding was not symmetric in effect
    pad_t = dilation * (w.shape[-1] - 1) - padding
    out = conv2d(go, reused(w, "flip", lambda u: u.flip(-1, -2)), None, 1, pad_t, dilation, C)
    return out[:, :, : shape[2], : shape[3]]


def _grad_weight(go: Tensor, x: Tensor, k: int, stride: int, padding: int, dilation: int) -> Tensor:
    N, C, H, W = x.shape
    xi = x.transpose(0, 1).reshape(1, C * N, H, W)
    ker = go.transpose(0, 1).reshape(C * N, 1, go.shape[2], go.shape[3])
    r = conv2d(xi, ker, None, dilation, padding, stride, C * N)  # [1, C*N, >=k, >=k]
    return r[:, :, :k, :k].reshape(C, N, k, k).sum(1, keepdim=True)


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, stride: int, padding: int, dilation: int) -> Tensor:
        # the input is only needed for the weight gradient (PGD passes ask for none): not kept otherwise
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, w)
        ctx.conf = (stride, padding, dilation, x.shape, x.stride())
        return conv2d(x, w, None, stride, padding, dilation, x.shape[1])

    @staticmethod
    def backward(ctx: Any, go: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        x, w = ctx.saved_tensors
        stride, padding, dilation, shape, strides = ctx.conf
        gx = gw = None
        k = w.shape[-1]
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if need_w and not torch.is_grad_enabled() and (k != 3 or dilation != 1):
            # the compiled kernel (None where it does not apply); not differentiable, so a
            # double backward (grad mode on) takes the paths below. oneDNN's undilated 3x3
            # weight gradient is as fast
            gw = _kernels.grad_weight(go, x, k, stride, padding, dilation)
            need_w = gw is None
        # measured per case (module docstring): oneDNN stays faster for the input gradient
        # of undilated strided kernels and the weight gradient of undilated kernels
        native_in = need_x and stride != 1 and dilation == 1
        native_w = need_w and dilation == 1
        if native_in or native_w:
            ref = x if x is not None else go.new_empty_strided(shape, strides)  # only its shape is read
            nx, nw, _ = torch.ops.aten.convolution_backward(
                go, ref, w, None, [stride] * 2, [padding] * 2, [dilation] * 2, False, [0, 0], shape[1],
                [native_in, native_w, False])
            gx = nx
            if native_w:
                gw = nw
        if need_x and not native_in:
            gx = _grad_input(go, w, shape, stride, padding, dilation)
        if need_w and not native_w:
            gw = _grad_weight(go, x, k, stride, padding, dilation)
        return gx, gw, None, None, None


def depthwise_conv2d(x: Tensor, w: Tensor, stride: int = 1, padding: int = 0, dilation: int = 1) -> Tensor:
    """``F.conv2d(x, w, None, stride, padding, dilation, groups=C)`` for ``w`` of shape
    ``[C, 1, k, k]``, with the CPU backward of the module docstring."""
    if x.device.type != "cpu" or not (x.requires_grad or w.requires_grad) or not torch.is_grad_enabled():
        return conv2d(x, w, None, stride, padding, dilation, x.shape[1])
    out: Tensor = _DepthwiseConv.apply(x, w, stride, padding, dilation)
    return out


def dw_conv(conv: nn.Conv2d, x: Tensor, groups: int = 1) -> Tensor:
    """Apply the depthwise ``conv`` module (square kernel, no bias) through
    :func:`depthwise_conv2d`, on ``groups`` batches stacked along the channels
    (:mod:`arnas_ray.space._groups`)."""
    return depthwise_conv2d(x, rep(conv.weight, groups), conv.stride[0], cast(int, conv.padding[0]), conv.dilation[0])
