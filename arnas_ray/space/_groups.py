"""Run one network on several batches at once, stacked along the channel axis.

``g`` batches of the same shape ``[N, C, H, W]`` are laid side by side as one ``[N, g*C, H, W]``
tensor (batch ``i`` in channels ``i*C .. (i+1)*C``). Every layer of the supernet acts on each
channel block alone when its convolutions get ``g`` times the groups (weights repeated), its
batch norms normalise per channel (so each batch keeps its own batch statistics, exactly as in
separate passes) and concatenations interleave per block. The outputs, and the gradients with
respect to each batch's input, are those of ``g`` separate passes; the work is done in half the
kernel calls on twice as many channels, which CPUs (vector width 16 floats) and GPUs (launch
bound at search widths) run markedly faster. Batch norms with running statistics get the
updates of the separate passes, one per batch in stacking order. Inside
:func:`block_params` the blocks may also run different weights (block ``i`` gets its own
values where a weight would be repeated).

With ``g == 1`` every helper is the plain module call, running statistics included.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arnas_ray.space._aten import conv2d
from arnas_ray.space._batchnorm import batch_norm_train

__all__ = ["Token", "apply_updates", "block_params", "blocks", "bn", "bn_groups", "bn_slots", "channels_last", "conv",
           "deferred_updates", "frozen_updates", "gcat", "linear", "per_block", "rep", "rep_cat", "reused", "reused_reps"]


_REPS: contextvars.ContextVar[dict[tuple[int, object], tuple[Tensor, int, Tensor]] | None] = contextvars.ContextVar(
    "arnas_ray_reps", default=None)


def reused(t: Tensor, tag: object, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``fn(t)``; inside :func:`reused_reps` computed once per (tensor, ``tag``) when ``t``
    needs no gradient, and reused while it is the same object with the same version counter."""
    cache = _REPS.get()
    if cache is None or t.requires_grad:
        return fn(t)
    hit = cache.get((id(t), tag))
    if hit is not None and hit[0] is t and hit[1] == t._version:
        return hit[2]
    out = fn(t)
    cache[(id(t), tag)] = (t, t._version, out)  # holds t: its id is not reused meanwhile
    return out


_BLOCKS: contextvars.ContextVar[dict[int, tuple[Tensor, Sequence[Tensor]]] | None] = contextvars.ContextVar(
    "arnas_ray_blocks", default=None)


@contextlib.contextmanager
def block_params(per_block: Iterable[tuple[Tensor, Sequence[Tensor]]]) -> Iterator[None]:
    """Inside, a grouped pass gives channel block ``i`` the weight ``values[i]`` wherever it
    would repeat the weight ``t`` (:func:`rep`, :func:`rep_cat`, :func:`linear`, the fused
    cells' weight banks), for each ``(t, values)`` of ``per_block`` (``t`` matched by
    identity): ``g`` batches through ``g`` different weight sets in one pass, e.g. the two
    shifted weight sets of a finite-difference Hessian-vector product."""
    token = _BLOCKS.set({id(t): (t, vs) for t, vs in per_block})
    try:
        yield
    finally:
        _BLOCKS.reset(token)


def blocks(t: Tensor, g: int) -> Sequence[Tensor] | None:
    """The per-block values of weight ``t`` inside :func:`block_params` (None for a weight
    every block shares)."""
    table = _BLOCKS.get()
    hit = table.get(id(t)) if table is not None else None
    if hit is None or hit[0] is not t:
        return None
    if len(hit[1]) != g:
        raise ValueError(f"block_params holds {len(hit[1])} values of a weight, but the pass stacks {g} batches")
    return hit[1]


def rep(t: Tensor, g: int) -> Tensor:
    """``t`` repeated ``g`` times along its first axis (a weight for ``g`` channel blocks); one
    ``cat`` (``Tensor.repeat`` makes about five times the aten calls, forward and backward).
    Inside :func:`reused_reps`, computed once per tensor that needs no gradient; inside
    :func:`block_params`, the blocks' own values of ``t`` where it has them."""
    if g == 1:
        return t
    per = blocks(t, g)
    return torch.cat(list(per)) if per is not None else reused(t, g, lambda u: torch.cat([u] * g))


def per_block(t: Tensor, g: int, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``fn(t)``, or inside :func:`block_params` where ``t`` has per-block values, ``fn`` of
    each stacked along a new first axis (``[g, ...]``)."""
    per = blocks(t, g) if g > 1 else None
    return fn(t) if per is None else torch.stack([fn(v) for v in per])


def rep_cat(ts: Sequence[Tensor], g: int) -> Tensor:
    """``rep(torch.cat(ts), g)``: the weights ``ts`` concatenated along their first axis, for
    each of ``g`` channel blocks (each block's own values inside :func:`block_params`)."""
    if g == 1 or all(blocks(t, g) is None for t in ts):
        return rep(torch.cat(list(ts)), g)
    per = [blocks(t, g) or [t] * g for t in ts]
    return torch.cat([p[i] for i in range(g) for p in per])


def linear(m: nn.Linear, x: Tensor, g: int) -> Tensor:
    """``m(x)`` on ``x`` ``[N, g, C]``, block ``i`` through its own weights inside
    :func:`block_params` (the same module for every block otherwise)."""
    w = blocks(m.weight, g) if g > 1 else None
    if w is None:
        out: Tensor = m(x)
        return out
    y = torch.einsum("ngc,goc->ngo", x, torch.stack(list(w)))
    if m.bias is None:
        return y
    return y + torch.stack(list(blocks(m.bias, g) or [m.bias] * g))


@contextlib.contextmanager
def reused_reps() -> Iterator[None]:
    """Inside, :func:`rep` (and :func:`reused`) of a tensor that needs no gradient (a frozen
    parameter) is computed once and reused while the tensor is unchanged (same object, same
    version counter): for repeated passes with frozen weights, such as the steps of a PGD attack."""
    token = _REPS.set({})
    try:
        yield
    finally:
        _REPS.reset(token)


def conv(m: nn.Conv2d, x: Tensor, g: int) -> Tensor:
    """``m(x)`` on each of ``g`` channel blocks (no bias: the supernet's convs have none)."""
    if g == 1 and (m.bias is not None or m.padding_mode != "zeros"):
        out: Tensor = m(x)
        return out
    if isinstance(m.padding, str):  # 'same' / 'valid': F.conv2d resolves it
        return F.conv2d(x, rep(m.weight, g), None, m.stride, m.padding, m.dilation, m.groups * g)
    return conv2d(x, rep(m.weight, g), None, m.stride, m.padding, m.dilation, m.groups * g)


def bn(m: nn.BatchNorm2d, x: Tensor, g: int, weight: Tensor | None = None, relu: bool = False) -> Tensor:
    """``m(x)`` (optionally with a per-channel ``weight`` in place of the affine one, no shift
    then; with ``relu``, ``F.relu`` of it) on each of ``g`` channel blocks; ``g > 1`` needs
    training mode (batch statistics). In training mode the running statistics are updated
    through :func:`bn_groups` (deferred inside :func:`deferred_updates`)."""
    if not m.training:
        if g != 1:
            raise RuntimeError("grouped passes need batch statistics: put the model in training mode")
        out = m(x) if weight is None else F.batch_norm(x, m.running_mean, m.running_var, weight, None,
                                                       not m.track_running_stats, 0.0, m.eps)
        return F.relu(out) if relu else out
    return bn_groups(m, x, g, weight, relu)[0]


class Token(NamedTuple):
    """The batch statistics of one training-mode batch-norm call, for running-statistic updates."""

    mean: Tensor  # [g * P * C] batch means, channel layout (g, p, c)
    invstd: Tensor  # [g * P * C] batch inverse standard deviations
    n: int  # elements per channel (N * H * W)
    g: int  # batch blocks stacked along the channels
    slots: int  # P: channel blocks of C that feed different modules


def bn_groups(m: nn.BatchNorm2d, x: Tensor, g: int, weight: Tensor | None = None,
              relu: bool = False) -> tuple[Tensor, Token | None]:
    """Training-mode ``m`` on ``g`` channel blocks (``g >= 1``), each with its own batch
    statistics (with ``relu``, the output is ``F.relu`` of it, in the same kernel pass).

    The running statistics of ``m`` get the ``g`` updates that ``g`` separate passes would
    have made, in block order (deferred to the end of a :func:`deferred_updates` block).
    Returns the output and a token for :func:`apply_updates`, which gives other batch norms
    fed the same input the same updates (None without running statistics)."""
    if not m.training:
        raise RuntimeError("grouped passes need batch statistics: put the model in training mode")
    w: Tensor | None
    b: Tensor | None
    if weight is None and m.affine:
        w, b = rep(m.weight, g), rep(m.bias, g)
    else:
        w, b = weight, None
    if not (m.track_running_stats and m.running_mean is not None and m.running_var is not None):
        return batch_norm_train(x, w, b, m.eps, relu)[0], None
    out, mean, invstd = batch_norm_train(x, w, b, m.eps, relu)
    token = Token(mean, invstd, x.numel() // x.shape[1], g, 1)  # statistics are not differentiable
    apply_updates(m, token)
    return out, token


def bn_slots(x: Tensor, slots: Sequence[Sequence[nn.BatchNorm2d]], g: int,
             weight: Tensor | None = None) -> Tensor:
    """One training-mode batch norm of ``x`` ``[N, g*P*C, H, W]`` (channel layout ``(g, p, c)``)
    standing for the non-affine batch norms of ``P`` channel blocks: every module in
    ``slots[p]`` gets the running-statistic updates of block ``p`` (one per batch block, as
    ``g`` separate passes would), as with :func:`bn_groups`. ``weight`` (``[g*P*C]``) scales the
    output per channel (no shift). The modules share ``eps`` (the supernet's all have the default)."""
    first = slots[0][0]
    if not first.training:
        raise RuntimeError("fused batch norms need batch statistics: put the model in training mode")
    out, mean, invstd = batch_norm_train(x, weight, None, first.eps)
    token = Token(mean, invstd, x.numel() // x.shape[1], g, len(slots))  # statistics are not differentiable
    for p, modules in enumerate(slots):
        for m in modules:
            apply_updates(m, token, p)
    return out


_Entry = tuple[nn.BatchNorm2d, Token, int]  # (module, token, slot) of one recorded update
_PENDING: contextvars.ContextVar[list[_Entry] | None] = contextvars.ContextVar("arnas_ray_bn_updates", default=None)


@contextlib.contextmanager
def deferred_updates() -> Iterator[None]:
    """Collect the running-statistic updates recorded by :func:`bn_groups`, :func:`bn_slots`
    and :func:`apply_updates` and apply them all at the end, vectorised (hundreds of tiny
    per-module updates cost more than a grouped pass saves)."""
    token = _PENDING.set([])
    try:
        yield
    finally:
        pending = _PENDING.get()
        _PENDING.reset(token)
        _flush(pending or [])


_FROZEN: contextvars.ContextVar[bool] = contextvars.ContextVar("arnas_ray_bn_frozen", default=False)


@contextlib.contextmanager
def frozen_updates() -> Iterator[None]:
    """Inside, :func:`apply_updates` (so :func:`bn`, :func:`bn_groups` and :func:`bn_slots`)
    leaves every running statistic as it is: for passes whose statistics are thrown away."""
    token = _FROZEN.set(True)
    try:
        yield
    finally:
        _FROZEN.reset(token)


def apply_updates(m: nn.BatchNorm2d, token: Token | None, slot: int = 0) -> None:
    """Give ``m`` the block-wise running-statistic updates of channel block ``slot`` recorded in
    ``token`` (see :func:`bn_groups`), now or at the end of the enclosing :func:`deferred_updates`."""
    if token is None or m.running_mean is None or m.running_var is None or _FROZEN.get():
        return
    pending = _PENDING.get()
    if pending is None:
        _flush([(m, token, slot)])
    else:
        pending.append((m, token, slot))


@functools.lru_cache(maxsize=32)
def _layout(g: int, mom: float, tokens: tuple[tuple[int, int, int], ...], entries: tuple[tuple[int, int, int], ...],
            dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For ``tokens`` ``(size, slots, n)`` concatenated and ``entries`` ``(token, slot, C)`` (one
    per module, modules concatenated): per updated element, the index of its statistic in the
    concatenated tokens, the update coefficient ``mom * (1-mom)^(g-1-k)``, the unbiasing factor
    ``n / (n-1)`` and the index of the running-statistic element it updates (the same for
    every pass of one model, hence cached)."""
    keep = 1.0 - mom
    starts = [0]
    for size, _, _ in tokens:
        starts.append(starts[-1] + size)
    gather: list[int] = []
    coef: list[float] = []
    unbias: list[float] = []
    index: list[int] = []
    offset = 0
    for t, slot, c in entries:
        _, slots, n = tokens[t]
        for k in range(g):
            base = starts[t] + (k * slots + slot) * c
            gather += range(base, base + c)
            coef += [mom * keep ** (g - 1 - k)] * c
            index += range(offset, offset + c)
        unbias += [n / max(n - 1, 1)] * (g * c)
        offset += c
    return (torch.tensor(gather, device=device), torch.tensor(coef, dtype=dtype, device=device),
            torch.tensor(unbias, dtype=dtype, device=device), torch.tensor(index, device=device))


class _FlatStats:
    """The running statistics of a fixed list of batch norms as views of three flat tensors,
    so that a pass's updates are a few vectorised ops instead of three per module (CPU
    ``_foreach`` ops loop over their tensors). The views replace the modules' buffers (same
    values, names and state dict); a module whose buffers were replaced since (``.to()``,
    ``.double()``) makes :func:`_flat_stats` build a new one."""

    def __init__(self, modules: list[nn.BatchNorm2d]):
        self.modules = modules
        sizes = [m.running_mean.numel() for m in modules]  # type: ignore[union-attr]
        with torch.no_grad():
            self.mean = torch.cat([m.running_mean for m in modules])  # type: ignore[misc]
            self.var = torch.cat([m.running_var for m in modules])  # type: ignore[misc]
            self.count = torch.stack([m.num_batches_tracked for m in modules])  # type: ignore[misc]
        for m, a, b, c in zip(modules, torch.split(self.mean, sizes), torch.split(self.var, sizes), self.count.unbind()):
            m.running_mean, m.running_var, m.num_batches_tracked = a, b, c
        self.views = [(m.running_mean, m.running_var, m.num_batches_tracked) for m in modules]

    def valid(self) -> bool:
        return all(m.running_mean is a and m.running_var is b and m.num_batches_tracked is c
                   for m, (a, b, c) in zip(self.modules, self.views))


_FLATS: dict[tuple[int, ...], _FlatStats] = {}


def _flat_stats(modules: list[nn.BatchNorm2d]) -> _FlatStats | None:
    """The flat running statistics of ``modules`` (None where they cannot share one: repeated
    modules, mixed dtypes or devices, no batch counter)."""
    key = tuple(id(m) for m in modules)
    flat = _FLATS.get(key)
    if flat is not None and flat.valid():
        return flat
    if len(set(key)) != len(key) or any(m.num_batches_tracked is None for m in modules):
        return None
    if len({(m.running_mean.dtype, m.running_mean.device) for m in modules}) != 1:  # type: ignore[union-attr]
        return None
    if len(_FLATS) >= 4:  # a few models at a time (the search's one); forget the oldest
        del _FLATS[next(iter(_FLATS))]
    flat = _FLATS[key] = _FlatStats(modules)
    return flat


@torch.no_grad()
def _flush(entries: list[_Entry]) -> None:
    """For every (module, token, slot): ``g`` batch-norm updates in block order,
    ``r <- (1-mom)^g r + mom * sum_k (1-mom)^(g-1-k) stat_k``, with the batch mean and the
    unbiased batch variance of the slot's channels as statistics, computed for all modules at once."""
    if not entries:
        return
    groups: dict[tuple[float, float, int], list[_Entry]] = {}
    for m, tok, slot in entries:
        mom = m.momentum if m.momentum is not None else 0.1
        groups.setdefault((mom, m.eps, tok.g), []).append((m, tok, slot))
    for (mom, eps, g), items in groups.items():
        position: dict[int, int] = {}
        tokens: list[Token] = []
        for _, tok, _ in items:
            if id(tok) not in position:
                position[id(tok)] = len(tokens)
                tokens.append(tok)
        sizes = tuple(cast(Tensor, m.running_mean).numel() for m, _, _ in items)  # recorded: not None
        key_t = tuple((t.mean.numel(), t.slots, t.n) for t in tokens)
        key_e = tuple((position[id(tok)], slot, c) for (_, tok, slot), c in zip(items, sizes))
        mean_all = torch.cat([t.mean for t in tokens])
        gather, coef_t, unbias_t, idx = _layout(g, mom, key_t, key_e, mean_all.dtype, mean_all.device)
        mean = mean_all.index_select(0, gather)
        var = (torch.cat([t.invstd for t in tokens]).index_select(0, gather).pow(-2) - eps) * unbias_t
        _write([m for m, _, _ in items], sizes, (mean * coef_t, var * coef_t), idx, (1.0 - mom) ** g, g)


def _write(modules: list[nn.BatchNorm2d], sizes: tuple[int, ...], increments: tuple[Tensor, Tensor], idx: Tensor,
           decay: float, g: int) -> None:
    """``r <- decay * r + increments`` (scattered by ``idx``) for the running means and variances
    of ``modules``, and ``g`` more batches counted. Written through ``.data``, as batch norm's
    own kernels write them: no version bump, so graphs of earlier passes that saved these
    buffers stay valid."""
    flat = _flat_stats(modules)
    if flat is not None:
        for target, inc in zip((flat.mean, flat.var), increments):
            target.data.mul_(decay).index_add_(0, idx, inc.to(target.dtype))
        flat.count.data.add_(g)
        return
    for j, inc in enumerate(increments):
        tensors = [(m.running_mean if j == 0 else m.running_var).data for m in modules]  # type: ignore[union-attr]
        new = (torch.cat(tensors) * decay).index_add_(0, idx, inc.to(tensors[0].dtype))
        torch._foreach_copy_(tensors, list(torch.split(new, list(sizes))))
    counters = [m.num_batches_tracked for m in modules if m.num_batches_tracked is not None]
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
        parts = [torch.unflatten(t.permute(0, 2, 3, 1), 3, (g, -1)) for t in ts]
        return torch.cat(parts, dim=4).flatten(3).permute(0, 3, 1, 2)
    return torch.cat([torch.unflatten(t, 1, (g, -1)) for t in ts], dim=2).flatten(1, 2)
