"""The run directory of a sweep: every file name in it and every read and write of them.

A run directory is ``STORAGE/NAME``. ``STORAGE`` is resolved once, with
``pyarrow.fs.FileSystem.from_uri``:

* a local path (relative paths are made absolute) or ``file:///abs/path``;
* ``s3://BUCKET/PREFIX`` with pyarrow's query options, e.g.
  ``s3://arnas/runs?endpoint_override=127.0.0.1:9000&scheme=http`` (credentials come from the
  usual chain: environment, ``~/.aws``, the instance profile; never put keys in a spec);
* ``gs://BUCKET/PREFIX`` (service-account credentials);
* any other fsspec URL (``memory://``, ``abfs://`` ...) through
  ``PyFileSystem(FSSpecHandler(...))`` when fsspec and its backend are installed;
* or an explicit ``pyarrow.fs.FileSystem`` and a path inside it.

Writes are atomic: temp file + fsync + rename on a local disk; one whole object written from
memory on an object store (the object appears under its name only once the upload completed,
so a reader sees the previous version or the new one, never a part). Object-store calls that
fail with a network error are retried with back-off for up to :data:`RETRY_ENV` seconds
(default 30), then raise :class:`StorageError`, which names the storage.

The module imports neither torch nor ray, so notebooks can read runs anywhere.

Example:
    >>> import tempfile
    >>> rd = RunDir.for_sweep(tempfile.mkdtemp(), "demo")
    >>> rd.write_text(SUMMARY, "{}")
    >>> rd.read_text(SUMMARY)
    '{}'
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from arnas_ray._atomic import atomic_write_bytes, hold_before_publish
from arnas_ray.errors import ArnasError

__all__ = [
    "LEASE",
    "PARETO",
    "REPORT",
    "RETRY_ENV",
    "RUN_FILES",
    "RunDir",
    "SEARCH_PARETO",
    "SPEC",
    "STOP",
    "SUMMARY",
    "StorageError",
    "TABLE",
    "TUNE",
    "redact_uri",
]

logger = logging.getLogger(__name__)

SPEC = "spec.yaml"  #: the validated sweep spec
TABLE = "results.parquet"  #: the results table (one row per trial and stage)
SUMMARY = "summary.json"  #: hypervolume, selection, failures, timings
REPORT = "report.html"  #: the self-contained report
PARETO = "pareto.png"  #: the front of the retrain stage (else the search stage)
SEARCH_PARETO = "pareto_search.png"  #: the front of the search stage
DIAGNOSTICS_PLOT = "search_diagnostics.png"  #: gamma and op-weight entropy per trial
LEASE = "lease.json"  #: the live driver's lease (owner, host, heartbeat)
STOP = "stop.json"  #: a request to stop the driver gracefully (``sweep stop``)
TUNE = "tune"  #: Ray Tune's experiments: ``tune/search``, ``tune/retrain``
RUN_FILES: tuple[str, ...] = (SPEC, TABLE, SUMMARY, REPORT, PARETO, SEARCH_PARETO, DIAGNOSTICS_PLOT,
                              LEASE, STOP)

RETRY_ENV = "ARNAS_RAY_STORAGE_RETRY_S"
_SECRET_KEYS = frozenset({"access_key", "secret_key", "session_token"})
T = TypeVar("T")


class StorageError(ArnasError, OSError):
    """The run directory's storage cannot be reached or refused an operation."""


def redact_uri(uri: str) -> str:
    """``uri`` with credentials in its query (``access_key``, ``secret_key``, ``session_token``)
    replaced by ``***``, so it can be logged or stored."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.query:
        return uri
    query = [(k, "***" if k in _SECRET_KEYS else v)
             for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, safe=":/")))


def _is_uri(text: str) -> bool:
    return "://" in text


def display_location(storage: str, name: str = "") -> str:
    """How ``STORAGE/NAME`` is shown to people, without opening the storage (no network call):
    a local absolute path, or the URI without its query (which may hold credentials)."""
    if _is_uri(storage):
        parts = urllib.parse.urlsplit(storage)
        shown = parts.path if parts.scheme == "file" else parts._replace(query="").geturl()
    else:
        shown = str(Path(storage).expanduser().absolute())
    shown = shown.rstrip("/")
    return f"{shown}/{name}" if name else shown


def _resolve(location: str, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str, str]:
    """``(filesystem, path inside it, display form)`` of a storage location."""
    if filesystem is not None:
        return filesystem, location.rstrip("/") or "/", f"{filesystem.type_name}:{location}"
    if not _is_uri(location):
        path = str(Path(location).expanduser().absolute())
        return pafs.LocalFileSystem(), path, path
    try:
        fs, path = pafs.FileSystem.from_uri(location)
    except pa.ArrowInvalid as exc:  # a scheme pyarrow lacks: try fsspec
        fs, path = _fsspec(location, exc)
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot open storage {redact_uri(location)!r}: {_first_line(exc)}") from None
    shown = path if isinstance(fs, pafs.LocalFileSystem) else display_location(location)
    return fs, path.rstrip("/"), shown.rstrip("/")


def _fsspec(uri: str, cause: Exception) -> tuple[pafs.FileSystem, str]:
    try:
        import fsspec
    except ImportError:
        raise StorageError(f"cannot open storage {redact_uri(uri)!r}: {_first_line(cause)} "
                           "(install fsspec and its backend for other schemes)") from None
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ValueError, ImportError, OSError) as exc:
        raise StorageError(f"cannot open storage {redact_uri(uri)!r}: {_first_line(exc)}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class RunDir:
    """One run directory on a pyarrow file system.

    Attributes:
        fs: the file system.
        path: the run directory's path inside ``fs`` (no trailing slash).
        uri: how it is shown to people (``s3://bucket/runs/NAME`` without the query, or the
            absolute local path).
    """

    fs: pafs.FileSystem
    path: str
    uri: str

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def open(cls, location: str | os.PathLike[str], *,
             filesystem: pafs.FileSystem | None = None) -> RunDir:
        """The run directory at ``location`` (a path or URI of the directory itself)."""
        fs, path, shown = _resolve(os.fspath(location), filesystem)
        return cls(fs, path, shown)

    @classmethod
    def for_sweep(cls, storage: str | os.PathLike[str], name: str, *,
                  filesystem: pafs.FileSystem | None = None) -> RunDir:
        """The run directory ``STORAGE/NAME`` of the sweep ``name``."""
        fs, path, shown = _resolve(os.fspath(storage), filesystem)
        return cls(fs, f"{path.rstrip('/')}/{name}", f"{shown.rstrip('/')}/{name}")

    def __str__(self) -> str:
        return self.uri

    # ---- names ----------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def file(self, name: str) -> str:
        """Path of ``name`` (a file of the run directory, or ``tune/...``) inside :attr:`fs`."""
        return f"{self.path}/{name}"

    def show(self, name: str = "") -> str:
        """How ``name`` is shown to people: the URI or the local path."""
        return f"{self.uri}/{name}" if name else self.uri

    def local_path(self, name: str = "") -> Path | None:
        """The local path of ``name``, or None on an object store."""
        if not self.is_local:
            return None
        return Path(self.file(name)) if name else Path(self.path)

    def tune_storage(self) -> tuple[str, pafs.FileSystem | None]:
        """``(storage_path, storage_filesystem)`` for Ray Tune's ``RunConfig``: the
        experiments live in ``RUN_DIR/tune/STAGE`` (a plain path for a local disk)."""
        if self.is_local:
            return self.file(TUNE), None
        return self.file(TUNE), self.fs

    # ---- reads ----------------------------------------------------------------------
    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried on network errors of an object store (not on a local disk)."""
        budget = float(os.environ.get(RETRY_ENV, "30") or 0)
        deadline = time.monotonic() + budget
        delay = 0.25
        while True:
            try:
                return fn()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
                raise
            except OSError as exc:
                if isinstance(exc, StorageError):
                    raise
                if self.is_local or time.monotonic() + delay > deadline:
                    raise StorageError(f"storage of the run directory {self.uri} failed to {what}: "
                                       f"{_first_line(exc)}") from None
                logger.warning("storage %s: %s failed (%s); retrying in %.1f s", self.uri, what,
                               _first_line(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def info(self, name: str) -> pafs.FileInfo:
        return self._retry(f"stat {name}", lambda: self.fs.get_file_info(self.file(name)))

    def exists(self, name: str = "") -> bool:
        """Whether the file ``name`` exists (``""``: whether the directory exists)."""
        target = self.file(name) if name else self.path
        info = self._retry(f"stat {name or 'the run directory'}", lambda: self.fs.get_file_info(target))
        if name:
            return bool(info.type == pafs.FileType.File)
        if info.type == pafs.FileType.Directory:
            return True
        # object stores have no directories: the prefix exists when an object is below it
        return not self.is_local and bool(self.list(""))

    def list(self, prefix: str = "") -> list[str]:
        """Paths (relative to the run directory) of every file below ``prefix``."""
        base = self.file(prefix).rstrip("/") if prefix else self.path
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        infos = self._retry(f"list {prefix or 'the run directory'}", lambda: self.fs.get_file_info(selector))
        root = self.path.rstrip("/") + "/"
        return sorted(i.path[len(root):] for i in infos if i.type == pafs.FileType.File
                      and i.path.startswith(root))

    def read_bytes(self, name: str) -> bytes:
        """The content of ``name``; ``FileNotFoundError`` names it when it is absent."""
        def read() -> bytes:
            if self.fs.get_file_info(self.file(name)).type != pafs.FileType.File:
                raise FileNotFoundError(f"{self.show(name)} does not exist")
            with self.fs.open_input_stream(self.file(name)) as f:
                return bytes(f.readall())
        return self._retry(f"read {name}", read)

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8")

    # ---- writes ---------------------------------------------------------------------
    def write_bytes(self, name: str, data: bytes) -> None:
        """Write ``name`` atomically (see the module docstring)."""
        local = self.local_path(name)
        if local is not None:
            atomic_write_bytes(local, data)
            return
        hold_before_publish()  # crash-test hook: the new bytes exist only in this process

        def put() -> None:
            try:
                out = self.fs.open_output_stream(self.file(name))
            except FileNotFoundError:  # a file system with real directories (local subtree, fsspec)
                self.fs.create_dir(self.file(name).rsplit("/", 1)[0], recursive=True)
                out = self.fs.open_output_stream(self.file(name))
            out.write(data)  # the whole object from memory; the upload completes in close()
            out.close()
        self._retry(f"write {name}", put)

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode("utf-8"))

    def delete(self, name: str) -> None:
        """Remove ``name`` if it exists."""
        def rm() -> None:
            with contextlib.suppress(FileNotFoundError):
                if self.fs.get_file_info(self.file(name)).type == pafs.FileType.File:
                    self.fs.delete_file(self.file(name))
        self._retry(f"delete {name}", rm)

    def makedirs(self) -> None:
        self._retry("create the run directory", lambda: self.fs.create_dir(self.path, recursive=True))

    # ---- the results table ----------------------------------------------------------
    def read_table(self) -> pd.DataFrame:
        """The results table (``FileNotFoundError`` when there is none yet)."""
        from arnas_ray.results.table import table_from_bytes

        return table_from_bytes(self.read_bytes(TABLE), self.show(TABLE))

    def write_table(self, df: pd.DataFrame) -> None:
        from arnas_ray.results.table import table_to_bytes

        self.write_bytes(TABLE, table_to_bytes(df))

    def upsert_rows(self, rows: Sequence[Mapping[str, Any]] | pd.DataFrame, *,
                    keep_finished: bool = False) -> pd.DataFrame:
        """Insert or replace rows keyed by ``(stage, trial_id)`` (see
        :func:`arnas_ray.results.table.merge_rows`) and write the table; ``keep_finished``:
        a row already ``finished`` in the table is final and is not replaced."""
        from arnas_ray.results.table import empty_table, merge_rows

        try:
            old = self.read_table()
        except FileNotFoundError:
            old = empty_table()
        merged = merge_rows(old, rows, keep_finished=keep_finished)
        self.write_table(merged)
        return merged

    @contextlib.contextmanager
    def open_local_copy(self, name: str) -> Iterator[Path]:
        """A local file holding ``name`` (the file itself on a local disk)."""
        local = self.local_path(name)
        if local is not None:
            yield local
            return
        import tempfile

        with tempfile.TemporaryDirectory(prefix="arnas-run-") as tmp:
            path = Path(tmp) / name.rsplit("/", 1)[-1]
            path.write_bytes(self.read_bytes(name))
            yield path

