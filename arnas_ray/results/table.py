"""The results table's I/O: one row per trial and stage, stored as Parquet, written atomically.

The table is the results channel of a sweep (STYLE.md rule 14): every search trial and every
retrain trial is one row keyed by ``(stage, trial_id)``; the columns are
:data:`arnas_ray.results.schema.SCHEMA`. :func:`write_table` / :func:`read_table` do the
(atomic) I/O on any filesystem pyarrow supports, through
:class:`arnas_ray.results.rundir.RunDir`; :func:`upsert_rows` merges new rows without ever
duplicating a key.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from arnas_ray.results.schema import (
    COLUMNS,
    ENDED,
    KEY,
    RECOVER,
    SCHEMA,
    STAGES,
    STATUSES,
    CorruptTableError,
    TableError,
    empty_table,
    from_arrow,
    normalize_rows,
    to_arrow,
    validate,
)

if TYPE_CHECKING:
    from arnas_ray.results.rundir import RunDir

__all__ = [
    "COLUMNS",
    "CorruptTableError",
    "ENDED",
    "KEY",
    "SCHEMA",
    "STAGES",
    "STATUSES",
    "TableError",
    "empty_table",
    "merge_rows",
    "normalize_rows",
    "read_run",
    "read_table",
    "table_from_bytes",
    "table_to_bytes",
    "upsert_rows",
    "write_table",
]

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------------------
# Serialisation, merging and I/O (through :class:`arnas_ray.results.rundir.RunDir`).


def table_to_bytes(df: pd.DataFrame) -> bytes:
    """The Parquet bytes of a results frame (checked and cast to :data:`SCHEMA`)."""
    table = to_arrow(df)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())  # pyarrow's messages span lines


def table_from_bytes(data: bytes, shown: str) -> pd.DataFrame:
    """A results frame from Parquet bytes; ``shown`` names the file in errors.

    Columns missing from an older file are added as null.

    Raises:
        CorruptTableError: not a readable Parquet file (one line: the file, what is wrong, how
            to recover).
        TableError: columns the schema does not know, or of an incompatible type.
    """
    try:
        table = pq.read_table(pa.BufferReader(data))
        names = table.column_names  # decodes the schema: a damaged one raises UnicodeDecodeError
        table.validate(full=True)  # the data too (invalid UTF-8 in a string column ...)
    except (pa.ArrowInvalid, pa.ArrowException, OSError, ValueError) as exc:
        raise CorruptTableError(f"{shown}: truncated or corrupt ({_one_line(exc)}); expected a results "
                                f"table written by arnas-ray; to recover, {RECOVER}") from None
    unknown = [c for c in names if c not in COLUMNS]
    if unknown:
        raise TableError(f"{shown}: unknown column(s) {sorted(unknown)}; expected a subset of {list(COLUMNS)}")
    arrays = []
    for field in SCHEMA:
        if field.name in names:
            try:
                arrays.append(table.column(field.name).cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                raise TableError(f"{shown}: column {field.name!r} cannot be read as {field.type} "
                                 f"({_one_line(exc)})") from None
        else:
            arrays.append(pa.nulls(table.num_rows, type=field.type))
    cast = pa.Table.from_arrays(arrays, schema=SCHEMA)
    try:
        validate(cast)
    except TableError as exc:
        raise TableError(f"{shown}: {exc}") from None
    return from_arrow(cast)


def merge_rows(old: pd.DataFrame, rows: Sequence[Mapping[str, Any]] | pd.DataFrame, *,
               keep_finished: bool = False) -> pd.DataFrame:
    """``old`` with ``rows`` inserted or replacing the rows of the same ``(stage, trial_id)``.

    A replaced row keeps its position; new keys are appended in the order given; when
    ``rows`` repeats a key the last one wins. With ``keep_finished`` a row that is already
    ``finished`` in ``old`` is final: a new row for its key is dropped.
    """
    new = normalize_rows(rows)
    new = new.drop_duplicates(subset=list(KEY), keep="last")
    if old.empty:
        return new
    old = old[~old.duplicated(subset=list(KEY), keep="last")]  # heal a file with duplicates
    old_keys = list(zip(old["stage"], old["trial_id"]))
    if keep_finished:
        done = {k for k, s in zip(old_keys, old["status"]) if s == "finished"}
        new = new[[k not in done for k in zip(new["stage"], new["trial_id"])]]
    new_keys = list(zip(new["stage"], new["trial_id"]))
    position = {key: i for i, key in enumerate(old_keys)}
    new_pos = [position.get(key, len(old_keys) + j) for j, key in enumerate(new_keys)]
    replaced = set(new_keys)
    keep = np.array([key not in replaced for key in old_keys], dtype=bool)
    kept = old[keep].assign(_pos=np.flatnonzero(keep))
    merged = pd.concat([kept, new.assign(_pos=new_pos)], ignore_index=True)
    merged = merged.sort_values("_pos", kind="stable").drop(columns="_pos")
    return normalize_rows(merged.reset_index(drop=True))


def _split(path: PathLike, filesystem: pafs.FileSystem | None) -> tuple[RunDir, str]:
    """The directory of ``path`` (a local path, a URI with its query, or a path inside
    ``filesystem``) as a :class:`RunDir`, and the file name."""
    from arnas_ray.results.rundir import RunDir

    text = os.fspath(path)
    if filesystem is not None:
        parent, _, name = text.rstrip("/").rpartition("/")
        return RunDir.open(parent or "/", filesystem=filesystem), name
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        parent, _, name = parts.path.rpartition("/")
        return RunDir.open(urllib.parse.urlunsplit(parts._replace(path=parent))), name
    local = Path(text)
    return RunDir.open(local.parent), local.name


def write_table(
    df: pd.DataFrame, path: PathLike, *, filesystem: pafs.FileSystem | None = None
) -> str:
    """Write a results frame to Parquet atomically.

    Local paths: temp file, fsync, rename. URIs (``s3://``, ``gs://``, ``file://``, fsspec
    schemes) and explicit ``filesystem`` objects: one whole object uploaded from memory, so a
    reader never sees a partial file (see :mod:`arnas_ray.results.rundir`).

    Args:
        df: rows of :data:`SCHEMA` (checked and cast with :func:`normalize_rows` rules).
        path: a local path or a URI understood by ``pyarrow.fs.FileSystem.from_uri``.
        filesystem: optional pyarrow filesystem; ``path`` is then a path inside it.

    Returns:
        The path written, as a string.

    Raises:
        TableError: ``df`` does not fit the schema; nothing is written.
    """
    data = table_to_bytes(df)
    run_dir, name = _split(path, filesystem)
    run_dir.write_bytes(name, data)
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
    run_dir, name = _split(path, filesystem)
    try:
        data = run_dir.read_bytes(name)
    except FileNotFoundError:
        raise FileNotFoundError(f"no results table at {os.fspath(path)}") from None
    return table_from_bytes(data, os.fspath(path))


def upsert_rows(
    path: PathLike,
    rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
    *,
    filesystem: pafs.FileSystem | None = None,
) -> pd.DataFrame:
    """Insert or replace rows keyed by ``(stage, trial_id)`` and write the table atomically.

    See :func:`merge_rows`. The file is read, merged and rewritten atomically, so a crash
    leaves either the old or the new table. Only one process (the sweep driver) should write
    a given table: concurrent writers would lose each other's updates.

    Args:
        path: the Parquet file (created if missing), local path or URI.
        rows: new or updated rows (see :func:`normalize_rows`).
        filesystem: optional pyarrow filesystem; ``path`` is then a path inside it.

    Returns:
        The whole table after the update.

    Raises:
        CorruptTableError: the existing file cannot be read (it is left untouched).
    """
    try:
        old = read_table(path, filesystem=filesystem)
    except FileNotFoundError:
        old = empty_table()
    merged = merge_rows(old, rows)
    write_table(merged, path, filesystem=filesystem)
    return merged


def read_run(run_dir: PathLike | RunDir, *, filesystem: pafs.FileSystem | None = None) -> pd.DataFrame:
    """Read ``RUN_DIR/results.parquet`` (local directory, URI or :class:`RunDir`)."""
    from arnas_ray.results.rundir import RunDir

    if isinstance(run_dir, RunDir):
        return run_dir.read_table()
    return RunDir.open(run_dir, filesystem=filesystem).read_table()
