"""Run one network on several batches at once, stacked along the channel axis.

``g`` batches of the same shape ``[N, C, H, W]`` are laid side by side as one ``[N, g*C, H, W]``
tensor (batch ``i`` in channels ``i*C .. (i+1)*C``). Every layer of the supernet acts on each
channel block alone when its convolutions get ``g`` times the groups (weights repeated), its
batch norms normalise per channel (so each batch keeps its own batch statistics, exactly as in
separate passes) and concatenations interleave per block. The outputs, and the gradients with
respect to each batch's input, are those of ``g`` separate passes; the work is done in half the
kernel calls on twice as many channels, which CPUs (vector width 16 floats) and GPUs (launch
bound at search widths) run markedly faster. Batch norms with running statistics get the
updates of the separate passes, one per batch in stacking order.

With ``g == 1`` every helper is the plain module call, running statistics included.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["apply_updates", "bn", "bn_groups", "channels_last", "conv", "deferred_updates", "gcat", "rep"]


def rep(t: Tensor, g: int) -> Tensor:
    """``t`` repeated ``g`` times along its first axis (a weight for ``g`` channel blocks)."""
    return t if g == 1 else t.repeat(g, *([1] * (t.dim() - 1)))


def conv(m: nn.Conv2d, x: Tensor, g: int) -> Tensor:
    """``m(x)`` on each of ``g`` channel blocks (no bias: the supernet's convs have none)."""
    if g == 1:
        return m(x)
    return F.conv2d(x, rep(m.weight, g), None, m.stride, m.padding, m.dilation, m.groups * g)


def bn(m: nn.BatchNorm2d, x: Tensor, g: int, weight: Tensor | None = None) -> Tensor:
    """``m(x)`` (optionally with a per-channel ``weight`` in place of the affine one, no shift
    then) on each of ``g`` channel blocks; ``g > 1`` needs training mode (batch statistics)."""
    if g == 1 and weight is None:
        return m(x)
    if g == 1:
        training = m.training or not m.track_running_stats
        if m.training and m.num_batches_tracked is not None:
            m.num_batches_tracked.add_(1)
        momentum = m.momentum if m.momentum is not None else 0.1
        return F.batch_norm(x, m.running_mean, m.running_var, weight, None, training, momentum, m.eps)
    return bn_groups(m, x, g, weight)[0]


Token = tuple  # (batch mean [g*C], batch inverse std [g*C], elements per channel n, groups g)


def bn_groups(m: nn.BatchNorm2d, x: Tensor, g: int, weight: Tensor | None = None) -> tuple[Tensor, Token | None]:
    """Training-mode ``m`` on ``g`` channel blocks (``g >= 1``), each with its own batch statistics.

    The running statistics of ``m`` get the ``g`` updates that ``g`` separate passes would
    have made, in block order (deferred to the end of a :func:`deferred_updates` block).
    Returns the output and a token for :func:`apply_updates`, which gives other batch norms
    fed the same input the same updates (None without running statistics)."""
    if not m.training:
        raise RuntimeError("grouped passes need batch statistics: put the model in training mode")
    if weight is None and m.affine:
        w, b = rep(m.weight, g), rep(m.bias, g)
    else:
        w, b = weight, None
    if not (m.track_running_stats and m.running_mean is not None and m.running_var is not None):
        return F.batch_norm(x, None, None, w, b, True, 0.0, m.eps), None
    out, mean, invstd = torch.native_batch_norm(x, w, b, None, None, True, 0.0, m.eps)
    token = (mean.detach(), invstd.detach(), x.numel() // x.shape[1], g)
    apply_updates(m, token)
    return out, token


_PENDING: contextvars.ContextVar[list | None] = contextvars.ContextVar("arnas_ray_bn_updates", default=None)


@contextlib.contextmanager
def deferred_updates() -> Iterator[None]:
    """Collect the running-statistic updates recorded by :func:`bn_groups` and
    :func:`apply_updates` and apply them all at the end, vectorised (hundreds of tiny
    per-module updates cost more than a grouped pass saves)."""
    token = _PENDING.set([])
    try:
        yield
    finally:
        pending = _PENDING.get()
        _PENDING.reset(token)
        _flush(pending or [])


def apply_updates(m: nn.BatchNorm2d, token: Token | None) -> None:
    """Give ``m`` the block-wise running-statistic updates recorded in ``token`` (see
    :func:`bn_groups`), now or at the end of the enclosing :func:`deferred_updates`."""
    if token is None or m.running_mean is None or m.running_var is None:
        return
    pending = _PENDING.get()
    if pending is None:
        _flush([(m, token)])
    else:
        pending.append((m, token))


@functools.lru_cache(maxsize=16)
def _layout(g: int, mom: float, sizes: tuple[int, ...], ns: tuple[int, ...], dtype: torch.dtype,
            device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Per element of the concatenated ``[g*C]`` statistics: the update coefficient
    ``mom * (1-mom)^(g-1-k)``, the unbiasing factor ``n / (n-1)`` and the index of the
    running-statistic element it updates (the same for every pass of one model)."""
    keep = 1.0 - mom
    coef: list[float] = []
    unbias: list[float] = []
    index: list[int] = []
    offset = 0
    for c, n in zip(sizes, ns):
        for k in range(g):
            coef += [mom * keep ** (g - 1 - k)] * c
            index += range(offset, offset + c)
        unbias += [n / max(n - 1, 1)] * (g * c)
        offset += c
    return (torch.tensor(coef, dtype=dtype, device=device), torch.tensor(unbias, dtype=dtype, device=device),
            torch.tensor(index, device=device))


@torch.no_grad()
def _flush(entries: list) -> None:
    """For every (module, token): ``g`` batch-norm updates in block order,
    ``r <- (1-mom)^g r + mom * sum_k (1-mom)^(g-1-k) stat_k``, with the batch mean and the
    unbiased batch variance as statistics, computed for all modules at once."""
    if not entries:
        return
    groups: dict[tuple[float, float, int], list] = {}
    for m, tok in entries:
        mom = m.momentum if m.momentum is not None else 0.1
        groups.setdefault((mom, m.eps, tok[3]), []).append((m, tok))
    for (mom, eps, g), items in groups.items():
        keep = 1.0 - mom
        sizes = tuple(m.running_mean.numel() for m, _ in items)
        mean = torch.cat([tok[0] for _, tok in items])
        coef_t, unbias_t, idx = _layout(g, mom, sizes, tuple(tok[2] for _, tok in items), mean.dtype, mean.device)
        var = (torch.cat([tok[1] for _, tok in items]).pow(-2) - eps) * unbias_t
        targets = [(m.running_mean.data, m.running_var.data) for m, _ in items]  # .data: see below
        for j, stat in enumerate((mean, var)):
            old = torch.cat([t[j] for t in targets])
            new = (old * keep**g).index_add_(0, idx, (stat * coef_t).to(old.dtype))
            # written through .data, as batch norm's own kernels write them: no version bump, so
            # graphs of earlier passes that saved these buffers stay valid
            torch._foreach_copy_([t[j] for t in targets], list(new.split(sizes)))
        counters = [m.num_batches_tracked for m, _ in items if m.num_batches_tracked is not None]
        if counters:
            torch._foreach_add_(counters, g)


def channels_last(t: Tensor) -> bool:
    """Whether ``t`` is a 4-D tensor in channels_last memory (and not also plain contiguous)."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def gcat(ts: Sequence[Tensor], g: int) -> Tensor:
    """``torch.cat(ts, dim=1)`` done per channel block: block ``i`` of the result is the
    concatenation of block ``i`` of every tensor. Keeps channels_last memory."""
    if g == 1:
        return torch.cat(list(ts), dim=1)
    if all(channels_last(t) for t in ts):  # [N, H, W, g, C_k] rows: concatenate the last axis
        parts = [t.permute(0, 2, 3, 1).unflatten(3, (g, -1)) for t in ts]
        return torch.cat(parts, dim=4).flatten(3).permute(0, 3, 1, 2)
    return torch.cat([t.unflatten(1, (g, -1)) for t in ts], dim=2).flatten(1, 2)
