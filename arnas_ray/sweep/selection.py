"""Which searched networks are retrained: the non-dominated finished search rows, one per network."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from arnas_ray.results import select_front
from arnas_ray.space import Genotype, Layout
from arnas_ray.space.layout import LAYOUT_PRESETS
from arnas_ray.sweep.spec import SweepSpec

__all__ = ["network_structure", "select_for_retrain"]


def _eligible(spec: SweepSpec, table: pd.DataFrame) -> pd.DataFrame:
    """Search rows that may be retrained: finished ones, and stopped ones (a scheduler ended
    them early; they carry the genotype of their last epoch) with ``include_stopped``."""
    search = table[(table["stage"] == "search") & table["genotype"].notna()]
    if spec.selection.include_stopped:
        search = search.assign(status=search["status"].replace({"stopped": "finished"}))
    return search[search["status"] == "finished"]


def _all_distinct(rows: pd.DataFrame, objectives: dict[str, str]) -> pd.DataFrame:
    """Every distinct network (``mode: all``), best first objective first."""
    first, direction = next(iter(objectives.items()))
    ordered = rows.sort_values([first, "trial_id"], ascending=[direction == "min", True], kind="stable")
    return ordered.drop_duplicates(subset=["architecture"], keep="first")


def select_for_retrain(spec: SweepSpec, table: pd.DataFrame) -> list[dict[str, Any]]:
    """Retrain points of the searched networks: the non-dominated rows (``selection.mode:
    front``, at most ``top_k``) or every distinct network (``mode: all``), one per network.

    Rows that build the same discrete network are retrained once (the first by the front's
    order): the same cells at the same positions and widths, whatever the cell types are
    called (a search from scratch tells cell types apart only by which stages share them, so
    ``robust-first`` finds the ``arnas`` network with the names swapped). The same genotype at
    other stages or widths is another network. Rows whose network cannot be built from the
    table fall back to the genotype JSON."""
    search = _eligible(spec, table)
    # the network's structure where it can be built, else the genotype JSON (canonicalised)
    arch = [network_structure(spec, row) or _canonical_genotype(row["genotype"]) for _, row in search.iterrows()]
    search = search.assign(architecture=arch)
    if spec.selection.mode == "all":
        chosen = _all_distinct(search, dict(spec.selection.objectives))
    else:
        chosen = select_front(search, spec.selection.objectives, top_k=spec.selection.top_k,
                              dedup_on=("architecture",))
    points = []
    for _, row in chosen.iterrows():
        placement = _placement(row)
        points.append({
            "key": f"retrain_{row['trial_id']}", "source": row["trial_id"],
            "genotype": Genotype.from_json(row["genotype"]).to_json(), "placement": placement,
            "layout_name": row["placement"], "channel_ratios": json.loads(row["channel_ratios"]),
            "strategy": row["strategy"], "seed": int(row["seed"]), "kind": "searched",
            "normalization": None if pd.isna(row["normalization"]) else str(row["normalization"]),
        })
    return points


def _placement(row: pd.Series) -> list[str]:
    """The cell type of every stage of a search row (preset name or the trial's config)."""
    if row["placement"] in LAYOUT_PRESETS:
        return list(Layout.from_spec(row["placement"], json.loads(row["channel_ratios"])).placement)
    cfg = json.loads(row["config"]) if isinstance(row["config"], str) else {}
    return list(_as_tuple(cfg.get("placement")))


def _canonical_genotype(value: Any) -> str | None:
    try:
        return "genotype:" + json.dumps(Genotype.from_json(value).to_dict(), sort_keys=True)
    except (ValueError, TypeError):
        return None


def network_structure(spec: SweepSpec, row: pd.Series) -> str | None:
    """The retrained network of a search row as JSON: per cell position, the cell's genotype,
    width and reduction flag (None where the row does not say enough)."""
    try:
        ratios = tuple(json.loads(row["channel_ratios"]))
        placement = tuple(_placement(row))
        cfg = spec.retrain_config(placement, ratios, 0)
        plan = Layout.from_lists(placement, ratios).plan(cfg.cells, cfg.channels)
        cells = json.loads(Genotype.from_json(row["genotype"]).to_json())["cells"]
        return json.dumps([[cells[p.cell_type], p.width, p.reduction] for p in plan], sort_keys=True)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _as_tuple(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())
