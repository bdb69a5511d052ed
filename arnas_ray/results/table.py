"""The results table: one row per trial and stage, stored as Parquet, written atomically.

The table is the results channel of a sweep (STYLE.md rule 14): every search trial and every
retrain trial is one row keyed by ``(stage, trial_id)``. :data:`SCHEMA` is the single source of
truth for the columns; :func:`normalize_rows` turns plain dicts into a frame of that schema,
:func:`write_table` / :func:`read_table` do the (atomic) I/O on any filesystem pyarrow supports
and :func:`upsert_rows` merges new rows without ever duplicating a key.

In pandas, ``int64`` columns use the nullable ``Int64`` dtype, ``float64`` columns use NaN for
null, strings use pandas' default string dtype and timestamps are ``datetime64[us, UTC]``.
JSON columns (``channel_ratios``, ``genotype``, ``config``) hold JSON text; lists and dicts given
to :func:`normalize_rows` are encoded for you.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from arnas_ray._atomic import atomic_write_with
from arnas_ray.errors import ArnasError

__all__ = [
    "COLUMNS",
    "CorruptTableError",
    "KEY",
    "RESULTS_FILE",
    "SCHEMA",
    "STAGES",
    "STATUSES",
    "TableError",
    "empty_table",
    "normalize_rows",
    "read_run",
    "read_table",
    "upsert_rows",
    "write_table",
]

logger = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("search", "retrain")
STATUSES: tuple[str, ...] = ("finished", "failed", "running", "pending")
KEY: tuple[str, str] = ("stage", "trial_id")
RESULTS_FILE = "results.parquet"

_TS = pa.timestamp("us", tz="UTC")

SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("sweep_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
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
_RECOVER = "delete it and run `arnas-ray sweep resume RUN_DIR`, which re-runs the missing trials"


class TableError(ArnasError, ValueError):
    """Rows or a file that do not fit :data:`SCHEMA` (names the column, value and allowed set)."""


class CorruptTableError(TableError):
    """A results file is truncated or is not a readable Parquet file."""


PathLike = str | os.PathLike[str]


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


def _to_arrow(df: pd.DataFrame) -> pa.Table:
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
    _validate(table)
    return table


def _validate(table: pa.Table) -> None:
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


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    df = table.to_pandas(types_mapper=_INT_MAPPER.get)
    for field in SCHEMA:  # keep microseconds regardless of the pandas default unit
        if pa.types.is_timestamp(field.type):
            df[field.name] = df[field.name].astype("datetime64[us, UTC]")
    return df


def empty_table() -> pd.DataFrame:
    """Return a results frame with no rows and every column of :data:`SCHEMA`."""
    return _to_pandas(SCHEMA.empty_table())


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
    return _to_pandas(_to_arrow(frame))


# --------------------------------------------------------------------------------------------
# I/O on local paths and pyarrow filesystems.


def _resolve(
    path: PathLike, filesystem: pafs.FileSystem | None
) -> tuple[pafs.FileSystem | None, str]:
    """Return ``(filesystem, path)``; ``filesystem`` is None for plain local paths."""
    text = os.fspath(path)
    if filesystem is not None:
        return filesystem, text
    if "://" in text:
        try:
            fs, inner = pafs.FileSystem.from_uri(text)
        except pa.ArrowInvalid as exc:  # a scheme pyarrow lacks (memory://...): try fsspec
            fs, inner = _fsspec_filesystem(text, exc)
        except OSError as exc:
            raise TableError(f"cannot open storage URI {text!r}: {exc}") from exc
        if isinstance(fs, pafs.LocalFileSystem):
            return None, inner
        return fs, inner
    return None, text


def _fsspec_filesystem(uri: str, cause: Exception) -> tuple[pafs.FileSystem, str]:
    """Wrap an fsspec filesystem (optional dependency) for schemes pyarrow does not know."""
    try:
        import fsspec  # optional: only for schemes such as memory:// (as Ray Tune does)
    except ImportError as exc:
        raise TableError(f"cannot open storage URI {uri!r}: {cause}; install fsspec for "
                         "other schemes") from exc
    try:
        fs, inner = fsspec.core.url_to_fs(uri)
    except (ValueError, ImportError, OSError) as exc:
        raise TableError(f"cannot open storage URI {uri!r}: {exc}") from exc
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner


def _join(base: PathLike, name: str) -> str:
    text = os.fspath(base)
    if "://" in text:
        return text.rstrip("/") + "/" + name
    return str(Path(text) / name)


def write_table(
    df: pd.DataFrame, path: PathLike, *, filesystem: pafs.FileSystem | None = None
) -> str:
    """Write a results frame to Parquet atomically.

    Local paths go through :func:`arnas_ray._atomic.atomic_write_with` (temp file, fsync,
    rename). URIs (``s3://``, ``gs://``, ``file://``...; schemes pyarrow lacks, such as
    ``memory://``, through fsspec when it is installed) and explicit ``filesystem`` objects are
    written to a temporary name in the same directory and then moved onto ``path``; a reader
    never sees a partial file (object stores implement ``move`` as copy + delete, which is
    atomic per object).

    Args:
        df: rows of :data:`SCHEMA` (checked and cast with :func:`normalize_rows` rules).
        path: a local path or a URI understood by ``pyarrow.fs.FileSystem.from_uri``.
        filesystem: optional pyarrow filesystem; ``path`` is then a path inside it.

    Returns:
        The path written, as a string.

    Raises:
        TableError: ``df`` does not fit the schema; nothing is written.
    """
    table = _to_arrow(df)
    fs, inner = _resolve(path, filesystem)
    if fs is None:
        atomic_write_with(inner, lambda tmp: pq.write_table(table, tmp))
        return inner
    parent, _, name = inner.rpartition("/")
    if parent:
        fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp" if parent else f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open_output_stream(tmp) as sink:
            pq.write_table(table, sink)
        fs.move(tmp, inner)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.delete_file(tmp)
        raise
    return os.fspath(path)


def read_table(path: PathLike, *, filesystem: pafs.FileSystem | None = None) -> pd.DataFrame:
    """Read a results file written by :func:`write_table`.

    Columns missing from an older file are added as null; the frame is cast to
    :data:`SCHEMA`.

    Raises:
        FileNotFoundError: no file at ``path``.
        CorruptTableError: the file is truncated or not Parquet; the message names the file
            and how to recover.
        TableError: the file has columns that the schema does not know.
    """
    fs, inner = _resolve(path, filesystem)
    shown = os.fspath(path)
    if fs is None:
        if not Path(inner).is_file():
            raise FileNotFoundError(f"no results table at {shown}")
    else:
        info = fs.get_file_info(inner)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"no results table at {shown}")
    try:
        table = pq.read_table(inner, filesystem=fs)
    except (pa.ArrowInvalid, pa.ArrowException, OSError, ValueError) as exc:
        raise CorruptTableError(
            f"results table {shown} is truncated or corrupt ({exc}); to recover, {_RECOVER}"
        ) from exc
    unknown = [c for c in table.column_names if c not in COLUMNS]
    if unknown:
        raise TableError(
            f"results table {shown} has unknown column(s) {sorted(unknown)}; expected a subset "
            f"of {list(COLUMNS)}"
        )
    arrays = []
    for field in SCHEMA:
        if field.name in table.column_names:
            try:
                arrays.append(table.column(field.name).cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise TableError(
                    f"results table {shown}: column {field.name!r} cannot be read as "
                    f"{field.type} ({exc})"
                ) from exc
        else:
            arrays.append(pa.nulls(table.num_rows, type=field.type))
    cast = pa.Table.from_arrays(arrays, schema=SCHEMA)
    return _to_pandas(cast)


def upsert_rows(
    path: PathLike,
    rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
    *,
    filesystem: pafs.FileSystem | None = None,
) -> pd.DataFrame:
    """Insert or replace rows keyed by ``(stage, trial_id)`` and write the table atomically.

    A row whose key is already in the file replaces the old row in place; new keys are
    appended in the order given; when ``rows`` repeats a key the last one wins. The file is
    read, merged and rewritten atomically, so a crash leaves either the old or the new table.
    Only one process (the sweep driver) should write a given table: concurrent writers would
    lose each other's updates.

    Args:
        path: the Parquet file (created if missing), local path or URI.
        rows: new or updated rows (see :func:`normalize_rows`).
        filesystem: optional pyarrow filesystem; ``path`` is then a path inside it.

    Returns:
        The whole table after the update.

    Raises:
        CorruptTableError: the existing file cannot be read (it is left untouched).
    """
    new = normalize_rows(rows)
    new = new.drop_duplicates(subset=list(KEY), keep="last")
    try:
        old = read_table(path, filesystem=filesystem)
    except FileNotFoundError:
        old = empty_table()
    if old.empty:
        merged = new
    else:
        old = old[~old.duplicated(subset=list(KEY), keep="last")]  # heal a file with duplicates
        old_keys = list(zip(old["stage"], old["trial_id"]))
        new_keys = list(zip(new["stage"], new["trial_id"]))
        position = {key: i for i, key in enumerate(old_keys)}
        new_pos = [position.get(key, len(old_keys) + j) for j, key in enumerate(new_keys)]
        replaced = set(new_keys)
        keep = np.array([key not in replaced for key in old_keys], dtype=bool)
        kept = old[keep].assign(_pos=np.flatnonzero(keep))
        merged = pd.concat([kept, new.assign(_pos=new_pos)], ignore_index=True)
        merged = merged.sort_values("_pos", kind="stable").drop(columns="_pos")
    merged = normalize_rows(merged.reset_index(drop=True))
    write_table(merged, path, filesystem=filesystem)
    return merged


def read_run(run_dir: PathLike, *, filesystem: pafs.FileSystem | None = None) -> pd.DataFrame:
    """Read ``RUN_DIR/results.parquet`` (local directory or URI)."""
    return read_table(_join(run_dir, RESULTS_FILE), filesystem=filesystem)
