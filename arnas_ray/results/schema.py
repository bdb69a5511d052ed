"""The results table's schema: columns, statuses, and the conversion of rows to it.

:data:`SCHEMA` is the single source of truth for the columns; :func:`normalize_rows` turns
plain dicts into a frame of that schema (the I/O is in :mod:`arnas_ray.results.table`).

In pandas, ``int64`` columns use the nullable ``Int64`` dtype, ``float64`` columns use NaN for
null, strings use pandas' default string dtype and timestamps are ``datetime64[us, UTC]``.
JSON columns (``channel_ratios``, ``genotype``, ``config``) hold JSON text; lists and dicts given
to :func:`normalize_rows` are encoded for you.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from arnas_ray.errors import ArnasError

__all__ = [
    "COLUMNS",
    "CorruptTableError",
    "ENDED",
    "KEY",
    "RECOVER",
    "SCHEMA",
    "STAGES",
    "STATUSES",
    "TableError",
    "empty_table",
    "from_arrow",
    "normalize_rows",
    "to_arrow",
    "validate",
]

STAGES: tuple[str, ...] = ("search", "retrain")
STATUSES: tuple[str, ...] = ("finished", "failed", "stopped", "running", "pending")
ENDED: tuple[str, ...] = STATUSES[:3]
"""The statuses of a trial that will not run on (in this sweep run)."""
KEY: tuple[str, str] = ("stage", "trial_id")

_TS = pa.timestamp("us", tz="UTC")

SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("sweep_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),  # the error's one line (type: message)
        pa.field("error_file", pa.string()),  # Tune's error file of the trial (traceback)
        pa.field("source", pa.string()),  # search; retrain: searched, random or named (baselines)
        pa.field("dataset", pa.string()),
        pa.field("placement", pa.string()),
        pa.field("channel_ratios", pa.string()),  # JSON list, e.g. "[1, 2, 2]"
        pa.field("strategy", pa.string()),
        pa.field("order", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("genotype", pa.string()),  # JSON of the genotype
        pa.field("params", pa.int64()),
        pa.field("flops", pa.int64()),  # multiply-accumulates
        pa.field("nat_acc", pa.float64()),
        pa.field("fgsm_acc", pa.float64()),
        pa.field("pgd20_acc", pa.float64()),
        pa.field("pgd100_acc", pa.float64()),
        pa.field("aa_acc", pa.float64()),
        pa.field("pgd_acc", pa.float64()),  # search stage: supernet PGD accuracy
        pa.field("normalization", pa.string()),  # the search's MGDA normalisation
        # search diagnostics of the last epoch (arnas_ray._diagnostics): weight of the natural
        # objective, fractions of steps with it at 0 / 1, cos(u_nat, u_adv), share of steps
        # whose update descends both objectives, edges of the genotype changed in the epoch,
        # mean op-weight entropy, and the degeneracy warning over the whole search ("" if none)
        pa.field("gamma_mean", pa.float64()),
        pa.field("gamma_frac_0", pa.float64()),
        pa.field("gamma_frac_1", pa.float64()),
        pa.field("cos_mean", pa.float64()),
        pa.field("descent_frac", pa.float64()),
        pa.field("genotype_changes", pa.int64()),
        pa.field("entropy_mean", pa.float64()),
        pa.field("degeneracy", pa.string()),
        pa.field("epochs", pa.int64()),
        pa.field("wall_s", pa.float64()),
        pa.field("device", pa.string()),
        pa.field("node", pa.string()),
        pa.field("started_at", _TS),
        pa.field("finished_at", _TS),
        pa.field("pareto_rank", pa.int64()),
        pa.field("git_sha", pa.string()),
        pa.field("config", pa.string()),  # JSON of the trial config
    ]
)
"""Arrow schema of the results table; non-nullable fields are the required ones."""

COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
_REQUIRED: tuple[str, ...] = tuple(f.name for f in SCHEMA if not f.nullable)
_JSON_COLUMNS = frozenset({"channel_ratios", "genotype", "config"})
RECOVER = "delete it and run `arnas-ray sweep resume RUN_DIR`, which re-runs the missing trials"


class TableError(ArnasError, ValueError):
    """Rows or a file that do not fit :data:`SCHEMA` (names the column, value and allowed set)."""


class CorruptTableError(TableError):
    """A results file is truncated or is not a readable Parquet file."""




# --------------------------------------------------------------------------------------------
# Conversion between rows, pandas and Arrow.


def _is_null(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and np.isnan(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _string_column(name: str, values: Iterable[Any]) -> pa.Array:
    out: list[str | None] = []
    for value in values:
        if _is_null(value):
            out.append(None)
        elif isinstance(value, str):
            out.append(value)
        elif name in _JSON_COLUMNS and isinstance(value, (list, tuple, dict, np.ndarray)):
            out.append(json.dumps(value, sort_keys=True, default=_json_default))
        else:
            kind = "a string or a JSON-able list/dict" if name in _JSON_COLUMNS else "a string"
            raise TableError(f"column {name!r}: expected {kind} or null, got {value!r}")
    return pa.array(out, type=pa.string())


def _int_column(name: str, values: pd.Series) -> pa.Array:
    try:
        converted = pd.array(values.to_numpy(dtype=object), dtype="Int64")
    except (TypeError, ValueError) as exc:
        bad = [v for v in values if not _is_null(v)][:3]
        raise TableError(f"column {name!r}: expected integers or null, got e.g. {bad!r}") from exc
    return pa.array(converted, type=pa.int64(), from_pandas=True)


def _float_column(name: str, values: pd.Series) -> pa.Array:
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        cleaned = [None if _is_null(v) else v for v in values]
        if any(isinstance(v, (str, bytes, bool)) for v in cleaned):
            bad = [v for v in cleaned if isinstance(v, (str, bytes, bool))][:3]
            raise TableError(f"column {name!r}: expected numbers or null, got e.g. {bad!r}")
        values = pd.Series(cleaned, dtype=object)
    try:
        converted = pd.to_numeric(values, errors="raise").astype("float64")
    except (TypeError, ValueError) as exc:
        raise TableError(f"column {name!r}: expected numbers or null ({exc})") from exc
    return pa.array(converted.to_numpy(), type=pa.float64(), from_pandas=True)


def _timestamp_column(name: str, values: pd.Series) -> pa.Array:
    try:
        if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
            values.dtype
        ):
            converted = pd.to_datetime(values, unit="s", utc=True)  # epoch seconds
        else:
            objs = [None if _is_null(v) else v for v in values]
            if all(v is None or isinstance(v, (int, float)) for v in objs) and any(objs):
                converted = pd.to_datetime(pd.Series(objs, dtype="float64"), unit="s", utc=True)
            else:
                converted = pd.to_datetime(pd.Series(objs, dtype=object), utc=True, format="mixed")
    except (TypeError, ValueError, OverflowError) as exc:
        raise TableError(
            f"column {name!r}: expected datetimes, ISO-8601 strings or epoch seconds ({exc})"
        ) from exc
    return pa.array(converted.dt.as_unit("us"), type=_TS, from_pandas=True)


def to_arrow(df: pd.DataFrame) -> pa.Table:
    """Check and cast a frame to :data:`SCHEMA` (missing columns become null)."""
    unknown = [c for c in df.columns if c not in COLUMNS]
    if unknown:
        raise TableError(
            f"unknown column(s) {sorted(map(str, unknown))}; the results table has columns "
            f"{list(COLUMNS)}"
        )
    df = df.reset_index(drop=True)
    n = len(df)
    arrays: list[pa.Array] = []
    for field in SCHEMA:
        name = field.name
        if name not in df.columns:
            arrays.append(pa.nulls(n, type=field.type))
            continue
        col = df[name]
        if pa.types.is_string(field.type):
            arr = _string_column(name, col)
        elif pa.types.is_integer(field.type):
            arr = _int_column(name, col)
        elif pa.types.is_floating(field.type):
            arr = _float_column(name, col)
        else:
            arr = _timestamp_column(name, col)
        arrays.append(arr)
    table = pa.Table.from_arrays(arrays, schema=SCHEMA)
    validate(table)
    return table


def validate(table: pa.Table) -> None:
    for name in _REQUIRED:
        nulls = table.column(name).null_count
        if nulls:
            raise TableError(f"column {name!r} is required, but {nulls} row(s) have no value")
    for name, allowed in (("stage", STAGES), ("status", STATUSES)):
        values = set(table.column(name).to_pylist())
        bad = sorted(v for v in values if v not in allowed)
        if bad:
            raise TableError(f"column {name!r}: unknown value(s) {bad}; expected one of {allowed}")


_INT_MAPPER = {pa.int64(): pd.Int64Dtype()}


def from_arrow(table: pa.Table) -> pd.DataFrame:
    df = table.to_pandas(types_mapper=_INT_MAPPER.get)
    for field in SCHEMA:  # keep microseconds regardless of the pandas default unit
        if pa.types.is_timestamp(field.type):
            df[field.name] = df[field.name].astype("datetime64[us, UTC]")
    return pd.DataFrame(df)


def empty_table() -> pd.DataFrame:
    """Return a results frame with no rows and every column of :data:`SCHEMA`."""
    return from_arrow(SCHEMA.empty_table())


def normalize_rows(rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Turn rows (dicts) into a frame of :data:`SCHEMA`.

    Missing columns become null, lists and dicts in JSON columns are JSON-encoded, timestamps
    may be datetimes, ISO-8601 strings or epoch seconds (naive values count as UTC).

    Args:
        rows: one mapping per (trial, stage), or a DataFrame.

    Returns:
        A frame with exactly the columns of :data:`SCHEMA`, in order, cast to its types.

    Raises:
        TableError: an unknown column (named), a value of the wrong type, a missing required
            value (``sweep_id``, ``stage``, ``trial_id``, ``status``) or an unknown stage/status.

    Example:
        >>> df = normalize_rows([{"sweep_id": "s", "stage": "search", "trial_id": "t0",
        ...                       "status": "finished", "channel_ratios": [1, 2, 2]}])
        >>> df.loc[0, "channel_ratios"]
        '[1, 2, 2]'
    """
    if isinstance(rows, pd.DataFrame):
        frame = rows
    else:
        rows = list(rows)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TableError(f"row {i}: expected a mapping, got {type(row).__name__}")
        if not rows:
            return empty_table()
        # Build object columns from the raw values so lists/dicts (JSON columns) stay intact.
        columns = list(dict.fromkeys(key for row in rows for key in row))
        frame = pd.DataFrame(
            {c: pd.Series([row.get(c) for row in rows], dtype=object) for c in columns}
        )
    return from_arrow(to_arrow(frame))
