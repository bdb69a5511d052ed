"""Cross-edge fusion of a search cell: the edges that read the same node, computed together.

Every edge ``j -> i`` of a DARTS search cell applies the same primitives, with its own
parameters and op weights, to state ``j``. In training mode the cell is evaluated in rounds:
round 0 takes both (preprocessed) cell inputs, stacked along the channels, and every edge
leaving them; round ``r >= 1`` the edges leaving node ``r - 1``, complete by then. Within a
round every operation runs once for all of its edges (same mathematics as :class:`MixedOp`):

* one ReLU, one max and one average pooling of the round's input, and one batch norm per
  pooling (non-affine with batch statistics: the same for every edge; every edge's running
  statistics get the updates). The normalised poolings and the identity (``skip_connect``)
  reach every target node through one matrix product with the edges' op weights;
* the first depthwise convolution of every sep/dil conv op of every edge as one depthwise
  convolution of the input repeated once per (op, edge); 3x3 and dilated 3x3 kernels run as
  5x5 kernels with zero taps (the same sums), so the four ops take two calls (5x5 and dilated
  5x5), each followed by one grouped pointwise convolution and one batch norm over all its
  channels (per-channel statistics are per edge and op already). The second half of the
  separable convolutions likewise; the final batch norms carry the op weights as their scale;
* a stride-2 ``skip_connect`` (FactorizedReduce) of every edge as one grouped 1x1 convolution
  of the even and the odd pixels.

The parameters stay in the edges' ``MixedOp`` modules (state dict unchanged). At every pass the
cell's convolution weights are stacked once (one ``stack`` per weight shape) into a flat bank
plus a zero, and every fused kernel (ordered, embedded, repeated per batch block) is one
``index_select`` of it with an index built once; ``torch.func.functional_call`` works as before.

Channel layouts are written outermost first: ``(g, s, o, t, c)`` is batch block ``g``
(:mod:`arnas_ray.space._groups`), source ``s``, op ``o``, target ``t``, channel ``c``. Tensors
whose channels are split are handled as NHWC views ``[N, H, W, *layout]``, which keeps
channels_last memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arnas_ray.space import _groups as _g
from arnas_ray.space._aten import conv2d
from arnas_ray.space._dense import dense_grad
from arnas_ray.space._dwconv import depthwise_conv2d
from arnas_ray.space._preprocess import preprocess_pair
from arnas_ray.space.ops import FactorizedReduce, MixedOp, even_odd

__all__ = ["CellFusion", "Round", "plan_rounds"]

SEP = {"sep_conv_3x3": 3, "sep_conv_5x5": 5}
DIL = {"dil_conv_3x3": 3, "dil_conv_5x5": 5}
POOLS = ("max_pool_3x3", "avg_pool_3x3")
#: 3x3 depthwise kernels run embedded in 5x5 ones (two calls per stage instead of four, 25/9
#: the multiply-adds of those ops), read when a cell's fusion is built; a benchmark knob
#: (``benchmarks/search_step.py --no-embed``)
EMBED_3X3 = True
#: largest state, in elements (``N * H * W * g * C`` at the cell's input resolution), for which
#: a cell evaluates its edges together; a cell with larger states evaluates them one edge at a
#: time (:class:`~arnas_ray.space._mixed.FusedMixedOp`). The fused tensors are ``S * P * T``
#: (up to 24) times a state and memory-bound past a few MB on these CPUs. Measured on the cells
#: of the benchmark's small shape (C=8, 5 cells, batch 16, 32x32), forward and input gradient,
#: 1 thread: the first cell with the two PGD batches stacked (262,144 elements) took 352 ms
#: fused against 195 ms per edge, alone (131,072) 193 against 224 ms; the 8x8 cells 42-74 ms
#: fused against 64-79 ms. With the batch-norm kernel the third cell (16x16, PGD pair: 131,072)
#: pays per edge too: whole first-order steps 4.93 s against 5.66 s fused, second order 6.75
#: against 7.35 s (``benchmarks/RESULTS.md``). Read at every pass; a benchmark knob.
CROSS_EDGE_MAX = 1 << 16
#: the same for reduction cells, counted at their input resolution: round 0 repeats both inputs
#: once per (op, target) there (24 times a 32x32 state in the benchmark's second cell). Measured
#: on that cell (2-core Xeon, as above): with the PGD pair (524,288 elements) 240 ms fused
#: against 195 ms per edge, alone (262,144) 104.5 against 107 ms; the whole second-order step
#: 10.1-10.5 s -> 9.35-9.5 s (``benchmarks/RESULTS.md``).
REDUCTION_MAX = 1 << 18
Key = tuple[int, object, int]  # (op column, submodule: index or attribute name, edge)
Edges = list[nn.ModuleList]  # per edge of a round, its primitive modules (``MixedOp._ops``)


@dataclass(frozen=True)
class Round:
    """The edges of one round: ``edges[s * T + t]`` is the mixed op from ``sources[s]`` to node ``targets[t]``."""

    sources: tuple[int, ...]  # states read: 0 and 1 the cell inputs, 2 + i node i
    targets: tuple[int, ...]  # nodes written
    edges: tuple[int, ...]


def plan_rounds(steps: int) -> tuple[Round, ...]:
    """Round 0: both cell inputs to every node; round r: node r - 1 to nodes r .. steps - 1."""
    offset = [sum(2 + k for k in range(i)) for i in range(steps)]
    out = [Round((0, 1), tuple(range(steps)), tuple(offset[i] + j for j in (0, 1) for i in range(steps)))]
    out += [Round((r + 1,), tuple(range(r, steps)), tuple(offset[i] + r + 1 for i in range(r, steps)))
            for r in range(1, steps)]
    return tuple(out)


def _nhwc(x: Tensor, dims: Sequence[int]) -> Tensor:
    """``[N, prod(dims), H, W]`` as the view ``[N, H, W, *dims]``."""
    return torch.unflatten(x.permute(0, 2, 3, 1), 3, tuple(dims))


def _nchw(v: Tensor) -> Tensor:
    """``[N, H, W, *dims]`` back to ``[N, prod(dims), H, W]`` (channels_last when ``v`` is dense)."""
    return v.flatten(3).permute(0, 3, 1, 2)


def _repeat(x: Tensor, g: int, S: int, C: int, P: int, T: int) -> Tensor:
    """``x`` (layout ``(g, s, c)``) repeated to the layout ``(g, s, o, t, c)``, ``P`` ops (the
    repeated axes adjacent: the backward sums over them fast)."""
    N, _, H, W = x.shape
    v = x.permute(0, 2, 3, 1).reshape(N, H, W, g, S, 1, C).expand(N, H, W, g, S, P * T, C)
    return v.reshape(N, H, W, g * S * P * T * C).permute(0, 3, 1, 2)


def _dw_spec(name: str, embed: bool) -> tuple[int, int]:
    """(kernel, dilation) that op ``name``'s first depthwise convolution runs with: with
    ``embed``, 3x3 and dilated 3x3 kernels as 5x5 ones (padding ``d * (k // 2)`` either way),
    else its own."""
    if not embed:
        return SEP.get(name) or DIL[name], 2 if name in DIL else 1
    return (5, 2) if name == "dil_conv_5x5" else (5, 1)


def _taps(name: str, size: int) -> list[int | None]:
    """For every tap of the ``size`` x ``size`` kernel op ``name`` runs with (row-major): the
    index of its own kernel's tap there, or None (a zero)."""
    k = SEP.get(name) or DIL[name]
    if k == size:
        return list(range(k * k))
    if name in SEP:  # 3x3 in the middle
        return [(a - 1) * 3 + (b - 1) if 1 <= a <= 3 and 1 <= b <= 3 else None for a in range(5) for b in range(5)]
    return [(a // 2) * 3 + b // 2 if a % 2 == 0 and b % 2 == 0 else None for a in range(5) for b in range(5)]


class CellFusion:
    """The fused training-mode forward of one :class:`~arnas_ray.space.supernet.SearchCell`.

    Holds only the cell's structure (op columns, rounds, weight-bank layout) and cached index
    tensors, never its modules or tensors, so deep copies and ``functional_call`` see the
    cell's own parameters."""

    def __init__(self, primitives: Sequence[str], steps: int, C: int, *, reduction: bool):
        self.embed = EMBED_3X3
        self.col = {name: k for k, name in enumerate(primitives)}
        self.K, self.C = len(primitives), C
        self.sep = [n for n in primitives if n in SEP]
        self.conv = self.sep + [n for n in primitives if n in DIL]  # sep ops first
        self.pools = [n for n in primitives if n in POOLS]
        self.skip = "skip_connect" in self.col
        self.rounds = plan_rounds(steps)
        self.reduction = reduction
        self._index: dict[tuple[tuple[object, ...], int, torch.device], Tensor] = {}
        # the weight bank: one stack per weight shape, in this order, then a zero
        edges = [e for rnd in self.rounds for e in rnd.edges]
        shapes: dict[tuple[int, ...], list[Key]] = {}
        shape: tuple[int, ...]
        part: int | str
        for name in self.conv:
            k, parts = SEP.get(name) or DIL[name], ((1, 2, 5, 6) if name in SEP else (1, 2))
            for part in parts:
                shape = (C, 1, k, k) if part in (1, 5) else (C, C, 1, 1)
                shapes.setdefault(shape, []).extend((self.col[name], part, e) for e in edges)
        if self.skip and reduction:  # FactorizedReduce on the edges of round 0
            for part in ("conv_1", "conv_2"):
                shapes.setdefault((C // 2, C, 1, 1), []).extend((self.col["skip_connect"], part, e)
                                                                 for e in self.rounds[0].edges)
        self.bank_keys = list(shapes.values())
        self.offset: dict[Key, int] = {}
        at = 0
        for shape, keys in shapes.items():
            size = int(torch.Size(shape).numel())
            for key in keys:
                self.offset[key] = at
                at += size
        self.zero = at  # index of the bank's trailing zero
        self.n_w = len(edges) * self.K + 1  # one block's op weights: [W.flatten(), 1]

    def pays(self, s1: Tensor, g: int) -> bool:
        """Whether evaluating the edges together pays for a cell input ``s1`` (``[N, *, H, W]``)
        with ``g`` stacked batches: ``N * H * W * g * C`` (at the input's resolution, also in a
        reduction cell, whose round 0 reads the inputs repeated per edge and op at that
        resolution) is at most :data:`CROSS_EDGE_MAX` (:data:`REDUCTION_MAX` in a reduction cell)."""
        limit = REDUCTION_MAX if self.reduction else CROSS_EDGE_MAX
        return s1.shape[0] * s1.shape[2] * s1.shape[3] * g * self.C <= limit

    # ---- weights --------------------------------------------------------------------------
    def bank(self, cell: nn.Module, g: int = 1) -> Tensor | None:
        """Every convolution weight of the cell's edges, flat, then one zero; inside
        :func:`~arnas_ray.space._groups.block_params` where the weights differ per batch block,
        one such bank per block, concatenated (:meth:`_select` offsets the indices)."""
        if not self.bank_keys:
            return None
        params = [[_param(cast(MixedOp, cast(nn.ModuleList, cell._ops)[e])._ops[k], part) for k, part, e in keys]
                  for keys in self.bank_keys]
        per = [[_g.blocks(p, g) for p in ps] for ps in params] if g > 1 else None
        if per is None or all(b is None for bs in per for b in bs):
            return _flat_bank(params)
        return torch.cat([_flat_bank([[(b or [p] * g)[i] for p, b in zip(ps, bs)] for ps, bs in zip(params, per)])
                          for i in range(g)])

    def _select(self, src: Tensor, size: int, key: tuple[object, ...], g: int, build: Callable[[], list[int]]) -> Tensor:
        """``src.index_select`` of the cached index (repeated per batch block); a ``src`` of one
        block of ``size`` per batch block (:meth:`bank`, :meth:`op_weights`) gets each block's
        indices offset into its own."""
        idx = self._cached(key, g, src.device, build)
        if src.numel() != size:
            n = idx.numel() // g
            idx = idx + torch.arange(g, device=src.device).repeat_interleave(n) * size
        return src.index_select(0, idx)

    def op_weights(self, weights: Tensor) -> Tensor:
        """``wext = [W.flatten(), 1]`` of the op weights ``W`` ``[E, K]``, one per batch block
        (concatenated) for per-block weights ``[g, E, K]``."""
        if weights.dim() == 2:
            return torch.cat([weights.flatten(), weights.new_ones(1)])
        return torch.cat([weights.flatten(1), weights.new_ones(weights.shape[0], 1)], dim=1).flatten()

    def _cached(self, key: tuple[object, ...], g: int, device: torch.device, build: Callable[[], list[int]]) -> Tensor:
        idx = self._index.get((key, g, device))
        if idx is None:
            idx = self._index[(key, g, device)] = torch.tensor(build(), device=device).repeat(g)
        return idx

    def take(self, wext: Tensor, key: tuple[object, ...], cells: Sequence[tuple[int, int | None]], C: int, g: int) -> Tensor:
        """Per channel ``(g, p, c)``: op weight ``W[edge, col]`` of ``cells[p]`` (1 where ``col`` is
        None), gathered from ``wext`` (:meth:`op_weights`)."""
        def build() -> list[int]:
            return [self.n_w - 1 if col is None else e * self.K + col for e, col in cells for _ in range(C)]
        return self._select(wext, self.n_w, ("w",) + key, g, build)

    def kernels(self, bank: Tensor, key: tuple[object, ...], names: Sequence[str], part: int, edges: Sequence[int], S: int,
                T: int, g: int, size: int) -> Tensor:
        """Depthwise kernels ``[(g, s, o, t, c), 1, size, size]`` of submodule ``part`` of ops
        ``names`` on the edges ``edges[s * T + t]`` (3x3 kernels embedded, see :func:`_taps`)."""
        def build() -> list[int]:
            out: list[int] = []
            for s in range(S):
                for name in names:
                    k, taps = SEP.get(name) or DIL[name], _taps(name, size)
                    for t in range(T):
                        base = self.offset[(self.col[name], part, edges[s * T + t])]
                        for c in range(self.C):
                            out += [self.zero if i is None else base + c * k * k + i for i in taps]
            return out
        return self._select(bank, self.zero + 1, ("dw",) + key, g, build).view(-1, 1, size, size)

    def pointwise(self, bank: Tensor, key: tuple[object, ...], names: Sequence[str], part: int, edges: Sequence[int], S: int,
                  T: int, g: int) -> Tensor:
        """Pointwise weights ``[(g, s, o, t, c), C, 1, 1]`` of submodule ``part`` of ops ``names``."""
        def build() -> list[int]:
            n = self.C * self.C
            return [self.offset[(self.col[name], part, edges[s * T + t])] + i
                    for s in range(S) for name in names for t in range(T) for i in range(n)]
        return self._select(bank, self.zero + 1, ("pw",) + key, g, build).view(-1, self.C, 1, 1)

    # ---- the cell -------------------------------------------------------------------------
    def forward(self, cell: nn.Module, s0: Tensor, s1: Tensor, weights: Tensor, g: int, multiplier: int) -> Tensor:
        """The cell's output ``[N, g*multiplier*C, H, W]`` (layout ``(g, node, c)``)."""
        x = preprocess_pair(cell, s0, s1, g)  # [N, g*2*C, H, W], layout (g, s, c)
        C = self.C
        wext = self.op_weights(weights)
        bank = self.bank(cell, g)
        states = list(_nhwc(x, (g, 2, C)).unbind(4))  # [N, H, W, g, C] each
        acc: Tensor | None = None
        for r, rnd in enumerate(self.rounds):
            stride = 2 if self.reduction and r == 0 else 1
            inp = x if r == 0 else _nchw(states[-1])
            out = self._round(cell, r, rnd, inp, wext, bank, g, stride)  # [N, H', W', g, T, C]
            acc = out if acc is None else acc[..., 1:, :] + out
            states.append(acc[..., 0, :].contiguous())  # dense: the next round reads it many times
        return _nchw(torch.cat(states[-multiplier:], dim=-1))

    def _round(self, cell: nn.Module, r: int, rnd: Round, x: Tensor, wext: Tensor, bank: Tensor | None, g: int,
               stride: int) -> Tensor:
        """Every edge of round ``rnd`` on its input ``x`` (layout ``(g, s, c)``), summed per target
        node: ``[N, H', W', g, T, C]``."""
        S, T, C = len(rnd.sources), len(rnd.targets), self.C
        ops = [cast(MixedOp, cast(nn.ModuleList, cell._ops)[e])._ops for e in rnd.edges]  # each edge's primitive modules
        relu = F.relu(x) if self.conv or (self.skip and stride == 2) else None
        parts: list[Tensor] = []  # per-edge op outputs, weighted: [N, H', W', g, s, o, t, c] views
        if self.conv:
            parts += self._convs(r, rnd, ops, cast(Tensor, relu), wext, cast(Tensor, bank), g, S, T, stride)
        if self.skip and stride == 2:
            h = self._reduce(r, rnd, ops, cast(Tensor, relu), wext, cast(Tensor, bank), g, S, T)
            parts.append(_nhwc(h, (g, S, 1, T, C)))
        total: Tensor | None = None
        for v in parts:  # summed over sources and ops
            v = v.sum(dim=(4, 5))
            total = v if total is None else total + v
        mixed = self._broadcast(r, rnd, ops, x, wext, g, S, T, stride)
        if mixed is not None:
            total = mixed if total is None else total + mixed
        if total is None:  # only `none`: zeros of the output shape
            ho, wo = (x.shape[2] - 1) // stride + 1, (x.shape[3] - 1) // stride + 1
            total = x.new_zeros(x.shape[0], ho, wo, g, T, C)
        return total

    def _broadcast(self, r: int, rnd: Round, ops: Edges, x: Tensor, wext: Tensor, g: int, S: int, T: int,
                   stride: int) -> Tensor | None:
        """The ops whose output is the same on every edge of a source (poolings with their batch
        norm, identity), mixed into the targets: ``[N, H', W', g, T, C]`` or None."""
        terms: list[Tensor] = []
        cols: list[int] = []
        for name in self.pools:
            k = self.col[name]
            pooled = cast(nn.Sequential, ops[0][k])[0](x)  # the edges of a round share the pooling's stride
            slots = [[cast(nn.BatchNorm2d, cast(nn.Sequential, op[k])[1]) for op in ops[s * T:(s + 1) * T]] for s in range(S)]
            terms.append(dense_grad(_g.bn_slots(pooled, slots, g)))  # BN's backward is slow on strided gradients
            cols.append(k)
        if self.skip and stride == 1:
            terms.append(x)
            cols.append(self.col["skip_connect"])
        if not terms:
            return None
        # [N, H', W', g, C, K', S] @ [K'*S, T]: per channel, sum over (op, source) of W[edge(s, t), op] * term
        stack = torch.stack([_nhwc(t, (g, S, self.C)).transpose(-1, -2) for t in terms], dim=-2)
        cells = [(rnd.edges[s * T + t], k) for k in cols for s in range(S) for t in range(T)]
        if wext.numel() == self.n_w:  # op weights shared by the batch blocks
            mix = self.take(wext, ("mix", r), cells, 1, 1).view(len(terms) * S, T)
        else:  # per block: [g, K'*S, T], one matrix per batch block
            mix = self.take(wext, ("mix", r), cells, 1, g).view(g, len(terms) * S, T)
        return dense_grad(stack.flatten(-2) @ mix).transpose(-1, -2)  # so is the product's

    def _convs(self, r: int, rnd: Round, ops: Edges, relu: Tensor, wext: Tensor, bank: Tensor, g: int, S: int,
               T: int, stride: int) -> list[Tensor]:
        """The sep/dil conv ops of every edge, as ``[N, H', W', g, s, o, t, c]`` views; their
        final batch norms carry the op weights. Stage A (the first depthwise conv of each op,
        pointwise conv, batch norm) runs once per kernel shape: the 5x5 one (sep ops and the
        embedded dilated 3x3) and the dilated 5x5 one."""
        C, E = self.C, rnd.edges
        groups: dict[tuple[int, int], list[str]] = {}
        for name in self.conv:  # sep ops first
            groups.setdefault(_dw_spec(name, self.embed), []).append(name)
        parts: list[Tensor] = []
        for (k, d), names in groups.items():
            P, nsep = len(names), sum(n in SEP for n in names)
            key = ("A", r, k, d)
            h = depthwise_conv2d(_repeat(relu, g, S, C, P, T), self.kernels(bank, key, names, 1, E, S, T, g, k),
                                 stride, d * (k // 2), d)
            h = conv2d(h, self.pointwise(bank, key, names, 2, E, S, T, g), None, 1, 0, 1, g * S * P * T)
            order = [(s, n, t) for s in range(S) for n in names for t in range(T)]  # (s, o, t)
            slots = [[cast(nn.BatchNorm2d, cast(nn.Sequential, ops[s * T + t][self.col[n]])[3])] for s, n, t in order]
            cells = [(E[s * T + t], None if n in SEP else self.col[n]) for s, n, t in order]
            h = _g.bn_slots(h, slots, g, weight=self.take(wext, key, cells, C, g))
            # split, not sliced: the backward of two slices would fill two zero tensors of h's size
            h_sep, h_dil = torch.split(_nhwc(h, (g, S, P, T, C)), [nsep, P - nsep], dim=5)
            if nsep < P:
                parts.append(h_dil)
            if nsep:
                parts.append(self._stage_b(r, rnd, ops, names[:nsep], h_sep, wext, bank, g, S, T))
        return parts

    def _stage_b(self, r: int, rnd: Round, ops: Edges, names: Sequence[str], h: Tensor, wext: Tensor, bank: Tensor,
                 g: int, S: int, T: int) -> Tensor:
        """The second half (ReLU, depthwise, pointwise, weighted BN) of the separable convolutions
        ``names``, on their stage-A output ``h`` ``[N, H, W, g, s, o, t, c]``."""
        C, E, P = self.C, rnd.edges, len(names)
        x = _nchw(F.relu(h))  # (g, s, o, t, c), dense
        k = max(SEP[n] for n in names)  # 5 when embedded; the ops' own size otherwise
        x = depthwise_conv2d(x, self.kernels(bank, ("B", r, k), names, 5, E, S, T, g, k), 1, k // 2, 1)
        x = conv2d(x, self.pointwise(bank, ("B", r, k), names, 6, E, S, T, g), None, 1, 0, 1, g * S * P * T)
        order = [(s, n, t) for s in range(S) for n in names for t in range(T)]
        slots = [[cast(nn.BatchNorm2d, cast(nn.Sequential, ops[s * T + t][self.col[n]])[7])] for s, n, t in order]
        w = self.take(wext, ("B", r, k), [(E[s * T + t], self.col[n]) for s, n, t in order], C, g)
        return _nhwc(_g.bn_slots(x, slots, g, weight=w), (g, S, P, T, C))

    def _reduce(self, r: int, rnd: Round, ops: Edges, relu: Tensor, wext: Tensor, bank: Tensor, g: int, S: int,
                T: int) -> Tensor:
        """FactorizedReduce (stride-2 ``skip_connect``) of every edge, weighted: layout ``(g, s, t, c)``."""
        k, C = self.col["skip_connect"], self.C
        z = even_odd(relu, g * S)  # (g, s, [even | odd], c)

        def build() -> list[int]:  # [(s, t, [conv_1 | conv_2], c / 2), [even | odd] * C]
            out: list[int] = []
            for e in rnd.edges:
                for part, side in (("conv_1", 0), ("conv_2", 1)):
                    base = self.offset[(k, part, e)]
                    for i in range(C // 2):
                        row = [base + i * C + j for j in range(C)]
                        zeros = [self.zero] * C
                        out += row + zeros if side == 0 else zeros + row
            return out
        w = self._select(bank, self.zero + 1, ("fr", r), g, build).view(-1, 2 * C, 1, 1)
        h = conv2d(z, w, None, 1, 0, 1, g * S)
        slots = [[cast(FactorizedReduce, op[k]).bn] for op in ops]
        return _g.bn_slots(h, slots, g, weight=self.take(wext, ("R", r), [(e, k) for e in rnd.edges], C, g))


def _flat_bank(params: Sequence[Sequence[Tensor]]) -> Tensor:
    """One stack per weight shape, flattened and concatenated, then a zero."""
    stacks = [torch.stack(list(ps)).flatten() for ps in params]
    return torch.cat([*stacks, stacks[0].new_zeros(1)])


def _param(op: nn.Module, part: object) -> Tensor:
    """The weight of submodule ``part`` (an index or an attribute name) of a primitive."""
    m = getattr(op, part) if isinstance(part, str) else op[part]  # type: ignore[index]
    w: Tensor = m.weight
    return w
