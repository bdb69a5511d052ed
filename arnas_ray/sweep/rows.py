"""Results-table rows of Tune trials: what a trial's config and last metrics say, as one row."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from arnas_ray.results.rundir import RunDir
from arnas_ray.results.table import ENDED
from arnas_ray.sweep.faults import Faults
from arnas_ray.sweep.spec import SweepSpec
from arnas_ray.sweep.trainables import point_from_config

__all__ = ["DIAGNOSTIC_COLUMNS", "error_file_of", "error_line", "final_status", "retrain_meta", "row",
           "search_meta"]

#: per-trial search diagnostics (the last epoch's summaries; ``degeneracy`` over the whole
#: search) copied from the metrics to the table
DIAGNOSTIC_COLUMNS: tuple[str, ...] = ("gamma_mean", "gamma_frac_0", "gamma_frac_1", "cos_mean", "descent_frac",
                                       "genotype_changes", "entropy_mean", "degeneracy")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Fault|Interrupt|Exit|Warning|File)\b.*")
#: a traceback names exceptions outside builtins by module: ``zipfile.BadZipFile: ...``
_MODULE_PREFIX = re.compile(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*(?::|$))")


def error_line(error: BaseException | str | None) -> str | None:
    """One line naming an error: ``Type: message`` of the original exception.

    For a traceback text (Tune's error file, a ``RayTaskError``) it is the last exception line
    (the original error, not the traceback's frames); for an exception, its cause's type and the
    first line of its message."""
    if error is None:
        return None
    if isinstance(error, BaseException):
        cause = getattr(error, "cause", None) or error
        text = str(cause).strip()
        if "\n" in text or "Traceback" in text:
            return error_line(text)
        return f"{type(cause).__name__}: {text.splitlines()[0]}" if text else type(cause).__name__
    lines = [ln.rstrip() for ln in str(error).strip().splitlines() if ln.strip()]
    exception_lines = [ln for ln in lines if _EXCEPTION_LINE.match(ln)]
    if exception_lines:
        return _MODULE_PREFIX.sub("", exception_lines[-1])
    return lines[-1] if lines else None


def error_file_of(run_dir: RunDir, trial_fs_path: str | None, filename: str | None = "error.txt") -> str | None:
    """Where Tune's error file of a trial is, as the run directory shows paths."""
    if not trial_fs_path or not filename:
        return None
    path = f"{trial_fs_path.rstrip('/')}/{filename}"
    root = run_dir.path.rstrip("/") + "/"
    return run_dir.show(path[len(root):]) if path.startswith(root) else path


def _ts(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    except (TypeError, ValueError):
        return None


def _status(metrics: Mapping[str, Any], error: str | None) -> str:
    if error is not None:
        return "failed"
    status = metrics.get("status", "running")
    return status if status in ENDED else "running"


def final_status(metrics: Mapping[str, Any], error: str | None, tune_status: str | None) -> str:
    """A trial's table status from its last report, its error and Tune's state of it.

    ``finished`` / ``failed`` as the trial reported them (or ``failed`` on a Tune error);
    ``stopped`` when Tune ended it before it reported its end (a scheduler, a stop criterion,
    the time budget: TERMINATED) or the driver stopped with it unfinished (RUNNING, PENDING:
    ``sweep stop``, Ctrl-C; a resume continues it)."""
    status = _status(metrics, error)
    if status in ("finished", "failed") or tune_status is None:
        return status
    return "stopped"


def _config_json(meta: Mapping[str, Any], metrics: Mapping[str, Any]) -> str | None:
    """The trial's config, with the data set's shape the trial reported (baselines need it)."""
    config = meta.get("config")
    if config is None:
        return None
    shape = {k: metrics[k] for k in ("num_classes", "in_channels") if metrics.get(k) is not None}
    return json.dumps({**config, **shape})


def row(spec: SweepSpec, stage: str, key: str, meta: Mapping[str, Any], metrics: Mapping[str, Any],
        error: str | None, git_sha: str | None, error_file: str | None = None,
        status: str | None = None) -> dict[str, Any]:
    """One table row from a trial's last reported metrics (or its error); ``status`` overrides
    what the metrics say (see :func:`final_status`)."""
    status = status or _status(metrics, error)
    end, total = metrics.get("timestamp"), metrics.get("time_total_s")
    out = {
        "sweep_id": spec.name, "stage": stage, "trial_id": key, "status": status,
        "error": error if error is not None else metrics.get("error"),
        "error_file": error_file,
        "dataset": spec.dataset.name, "placement": meta["placement"],
        "channel_ratios": json.dumps([int(r) if float(r).is_integer() else r for r in meta["channel_ratios"]]),
        "strategy": meta.get("strategy"), "order": spec.search.order, "seed": int(meta["seed"]),
        "normalization": meta.get("normalization"),
        "source": meta.get("source"),
        "genotype": metrics.get("genotype"), "params": metrics.get("params"), "flops": metrics.get("flops"),
        "nat_acc": metrics.get("nat_acc"),
        "pgd_acc": metrics.get("pgd_acc") if stage == "search" else None,
        "fgsm_acc": metrics.get("fgsm_acc"), "pgd20_acc": metrics.get("pgd20_acc"),
        "pgd100_acc": metrics.get("pgd100_acc"), "aa_acc": metrics.get("aa_acc"),
        "epochs": metrics.get("epoch"), "wall_s": metrics.get("wall_s", total),
        "device": metrics.get("device"), "node": metrics.get("node"),
        "started_at": _ts(end - total) if end is not None and total is not None else None,
        "finished_at": _ts(end) if status in ENDED else None,
        "git_sha": git_sha,
        "config": _config_json(meta, metrics),
    }
    if stage == "search":
        for name in DIAGNOSTIC_COLUMNS:
            value = metrics.get(name)
            out[name] = value if not (isinstance(value, float) and value != value) else None
    if stage == "search" and status not in ("finished", "stopped"):
        out.update(params=None, flops=None)
    return out


def search_meta(spec: SweepSpec, config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The key and the descriptive columns of a search trial, from its Tune config."""
    point = point_from_config(dict(config), spec)
    layout = point.layout()
    cfg = Faults.from_dict(config.get("faults")).search_config(point.key, spec.search_config(point))
    return point.key, {"placement": layout.name, "channel_ratios": list(layout.ratios), "strategy": point.strategy,
                       "seed": point.seed, "normalization": cfg.normalization, "config": cfg.to_dict(),
                       "source": "search"}


def retrain_meta(spec: SweepSpec, config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The key and the descriptive columns of a retrain trial, from its Tune config."""
    p = config["point"]
    source = p.get("kind", "searched")
    return p["key"], {"placement": p["layout_name"], "channel_ratios": list(p["channel_ratios"]),
                      "strategy": p.get("strategy"), "seed": p["seed"], "source": source,
                      "normalization": p.get("normalization"),
                      "config": {"source": p["source"]}}
