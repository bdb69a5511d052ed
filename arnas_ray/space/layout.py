"""Cell placement and channel proportion of a network: the ARNAS search-space design.

A :class:`Layout` is an ordered tuple of stages; each stage has a cell type (``accurate``,
``robust``, ``normal`` or any name) and a channel multiplier. Reduction cells (type
``reduce``) sit between stages, at cell indices ``k * L // S`` (k = 1..S-1) for ``L`` cells and
``S`` stages (ARNAS/DARTS: ``L // 3`` and ``2 L // 3``). A reduction cell halves the resolution
and runs at the width of the stage after it.

Presets: ``arnas`` (accurate x1, accurate x2, robust x2: the reference's channel rule, where the
second reduction does not double the width), ``darts`` (normal x1, x2, x4) and the ablation
placements ``robust-first``, ``all-accurate``, ``all-robust``, ``alternate``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from arnas_ray._config import check
from arnas_ray.errors import SpecError

__all__ = ["LAYOUT_PRESETS", "REDUCE", "CellPlan", "Layout", "Stage"]

REDUCE = "reduce"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True)
class Stage:
    """One stage of normal cells: their cell type and channel multiplier (width = C * multiplier)."""

    cell_type: str
    multiplier: float


@dataclass(frozen=True)
class CellPlan:
    """The role of cell ``index`` in a network of L cells."""

    index: int
    cell_type: str
    reduction: bool
    width: int  # per-node channels of this cell
    stage: int


@dataclass(frozen=True)
class Layout:
    """Cell placement per stage plus channel multipliers; see the module docstring.

    Example:
        >>> lay = Layout.preset("arnas")
        >>> [p.cell_type for p in lay.plan(cells=8, C=24)]
        ['accurate', 'accurate', 'reduce', 'accurate', 'accurate', 'reduce', 'robust', 'robust']
        >>> [p.width for p in lay.plan(cells=8, C=24)]
        [24, 24, 48, 48, 48, 48, 48, 48]
    """

    stages: tuple[Stage, ...]
    name: str = "custom"

    def __post_init__(self) -> None:
        if not self.stages:
            raise SpecError("placement", "a layout needs at least one stage, got []")
        for i, st in enumerate(self.stages):
            if not isinstance(st.cell_type, str) or not st.cell_type or not set(st.cell_type) <= _NAME_CHARS:
                raise SpecError(
                    f"placement[{i}]",
                    f"cell type names are non-empty lower-case words ([a-z0-9_-]), got {st.cell_type!r}",
                )
            if st.cell_type == REDUCE:
                raise SpecError(f"placement[{i}]", f"{REDUCE!r} is reserved for reduction cells")
            if isinstance(st.multiplier, bool) or not isinstance(st.multiplier, (int, float)):
                raise SpecError(f"channel_ratios[{i}]", f"expected a number, got {st.multiplier!r}")
            check(0 < st.multiplier <= 64, f"channel_ratios[{i}]", "0 < ratio <= 64", st.multiplier)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> Layout:
        """A named layout; ``KeyError`` lists the valid names."""
        try:
            placement, ratios = LAYOUT_PRESETS[name]
        except (KeyError, TypeError):
            raise SpecError("placement", f"unknown layout preset {name!r}; valid: {sorted(LAYOUT_PRESETS)}") from None
        return cls.from_lists(placement, ratios, name=name)

    @classmethod
    def from_lists(cls, placement: Sequence[str], ratios: Sequence[float], *, name: str | None = None) -> Layout:
        if isinstance(placement, str) or not isinstance(placement, Sequence):
            raise SpecError("placement", f"expected a list of cell types, got {placement!r}")
        if isinstance(ratios, str) or not isinstance(ratios, Sequence):
            raise SpecError("channel_ratios", f"expected a list of numbers, got {ratios!r}")
        if len(placement) != len(ratios):
            raise SpecError(
                "channel_ratios",
                f"needs one ratio per stage: placement has {len(placement)} stages, got "
                f"{len(ratios)} ratios {list(ratios)!r}",
            )
        stages = tuple(Stage(str(t) if isinstance(t, str) else t, r) for t, r in zip(placement, ratios))
        if name is None:
            name = "-".join(placement) if all(isinstance(t, str) for t in placement) else "custom"
        return cls(stages, name=name)

    @classmethod
    def from_spec(cls, value: Any, channel_ratios: Sequence[float] | None = None) -> Layout:
        """Build from a preset name, a list of cell types, or a dict.

        Dict form: ``{"placement": "arnas" | [types...], "channel_ratios": [..]}``; a ratio list
        given separately (or in the dict) overrides the preset's ratios.
        """
        if isinstance(value, Layout):
            layout = value
        elif isinstance(value, str):
            layout = cls.preset(value)
        elif isinstance(value, Mapping):
            # keys may be any YAML scalar (1, None): compare and name them as strings
            unknown = sorted(str(k) for k in value if k not in ("placement", "channel_ratios", "name"))
            if unknown:
                raise SpecError(unknown[0], f"unknown layout field {unknown[0]!r}; "
                                            "valid: ['channel_ratios', 'name', 'placement']")
            if "placement" not in value:
                raise SpecError("placement", "required field is missing")
            base = value["placement"]
            ratios = value.get("channel_ratios", channel_ratios)
            if isinstance(base, str):
                layout = cls.preset(base)
                if ratios is not None:
                    layout = layout.with_ratios(ratios)
            else:
                if ratios is None:
                    raise SpecError("channel_ratios", "required with an explicit placement list")
                layout = cls.from_lists(base, ratios)
            if "name" in value:
                if not isinstance(value["name"], str):
                    raise SpecError("name", f"expected a string, got {value['name']!r}")
                layout = Layout(layout.stages, name=value["name"])
            return layout
        elif isinstance(value, Sequence):
            if channel_ratios is None:
                raise SpecError("channel_ratios", "required with an explicit placement list")
            return cls.from_lists(value, channel_ratios)
        else:
            raise SpecError("placement", f"expected a preset name, a list of cell types or a mapping, got {value!r}")
        if channel_ratios is not None:
            layout = layout.with_ratios(channel_ratios)
        return layout

    def with_ratios(self, ratios: Sequence[float]) -> Layout:
        return Layout.from_lists([s.cell_type for s in self.stages], list(ratios), name=self.name)

    # ---- queries ------------------------------------------------------------------------
    @property
    def placement(self) -> tuple[str, ...]:
        return tuple(s.cell_type for s in self.stages)

    @property
    def ratios(self) -> tuple[float, ...]:
        return tuple(s.multiplier for s in self.stages)

    @property
    def cell_types(self) -> tuple[str, ...]:
        """Distinct normal cell types in order of first use, then ``reduce`` (if S > 1)."""
        seen: list[str] = []
        for s in self.stages:
            if s.cell_type not in seen:
                seen.append(s.cell_type)
        if len(self.stages) > 1:
            seen.append(REDUCE)
        return tuple(seen)

    def width(self, C: int, stage: int) -> int:
        """Per-node channels of ``stage``: ``round(C * multiplier)``, rounded up to even.

        Even widths keep the factorised (stride-2) reduction exact; integer ratios with an even
        ``C`` give exactly ``C * multiplier`` (the reference's rule).
        """
        w = max(2, int(round(C * self.stages[stage].multiplier)))
        return w + (w % 2)

    def reduction_indices(self, cells: int) -> tuple[int, ...]:
        S = len(self.stages)
        return tuple(k * cells // S for k in range(1, S))

    def plan(self, cells: int, C: int) -> list[CellPlan]:
        """The role and width of every cell of an ``cells``-cell network at base width ``C``."""
        S = len(self.stages)
        if isinstance(cells, bool) or not isinstance(cells, int) or cells < S:
            raise SpecError("cells", f"`cells >= number of stages ({S})` must hold, but got cells={cells!r}")
        reductions = self.reduction_indices(cells)  # may repeat for tiny L (e.g. L=3): allowed
        out: list[CellPlan] = []
        stage = 0
        for i in range(cells):
            if i in reductions:
                stage += 1
                out.append(CellPlan(i, REDUCE, True, self.width(C, stage), stage))
            else:
                st = self.stages[stage]
                out.append(CellPlan(i, st.cell_type, False, self.width(C, stage), stage))
        return out

    def rescaled_C(self, C: int, reference: Layout | str) -> int:
        """Base width whose stage-width sum matches ``reference``'s at ``C`` (equal width budget).

        Example: ``arnas`` (1, 2, 2) at C=8 has widths 8+16+16=40; a (1, 2, 4) layout gets
        C = 40/7 -> 6 (rounded to even).
        """
        ref = Layout.from_spec(reference) if isinstance(reference, str) else reference
        budget = C * sum(ref.ratios)
        c = max(2, int(round(budget / sum(self.ratios))))
        return c + (c % 2)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "placement": list(self.placement), "channel_ratios": list(self.ratios)}

    def ratios_json(self) -> str:
        return json.dumps([r if not float(r).is_integer() else int(r) for r in self.ratios])


LAYOUT_PRESETS: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "arnas": (("accurate", "accurate", "robust"), (1, 2, 2)),
    "darts": (("normal", "normal", "normal"), (1, 2, 4)),
    "robust-first": (("robust", "robust", "accurate"), (1, 2, 2)),
    "all-accurate": (("accurate", "accurate", "accurate"), (1, 2, 2)),
    "all-robust": (("robust", "robust", "robust"), (1, 2, 2)),
    "alternate": (("accurate", "robust", "accurate"), (1, 2, 2)),
}
