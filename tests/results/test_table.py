"""The results table: schema, normalisation, atomic I/O, corruption errors, upserts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arnas_ray.errors import ArnasError
from arnas_ray.results import table as tbl
from arnas_ray.results.table import (
    SCHEMA,
    CorruptTableError,
    TableError,
    empty_table,
    normalize_rows,
    read_run,
    read_table,
    upsert_rows,
    write_table,
)

from ._fakes import fake_rows, make_run, row


def test_schema_round_trip(tmp_path: Path) -> None:
    df = normalize_rows(fake_rows())
    path = tmp_path / "results.parquet"
    write_table(df, path)
    back = read_table(path)
    pd.testing.assert_frame_equal(back, df)
    assert pq.read_schema(path).remove_metadata().equals(SCHEMA)
    assert list(back.columns) == SCHEMA.names
    assert str(back["started_at"].dtype) == "datetime64[us, UTC]"
    assert back["seed"].dtype == "Int64" and back["nat_acc"].dtype == np.float64


def test_empty_table_round_trip(tmp_path: Path) -> None:
    empty = empty_table()
    assert list(empty.columns) == SCHEMA.names and len(empty) == 0
    write_table(empty, tmp_path / "e.parquet")
    pd.testing.assert_frame_equal(read_table(tmp_path / "e.parquet"), empty)


def test_normalize_fills_missing_columns_with_nulls_and_encodes_json() -> None:
    df = normalize_rows([row("search", "t0", channel_ratios=[1, 2, 2], seed=np.int64(3),
                             genotype={"cells": {}}, started_at=dt.datetime(2024, 1, 1),
                             finished_at=1_704_067_260.0)])
    assert df.loc[0, "channel_ratios"] == "[1, 2, 2]"
    assert df.loc[0, "genotype"] == '{"cells": {}}'
    assert df.loc[0, "seed"] == 3
    assert pd.isna(df.loc[0, "params"]) and pd.isna(df.loc[0, "nat_acc"])
    assert pd.isna(df.loc[0, "error"])
    assert df.loc[0, "started_at"] == pd.Timestamp("2024-01-01T00:00:00Z")  # naive = UTC
    assert df.loc[0, "finished_at"] == pd.Timestamp("2024-01-01T00:01:00Z")  # epoch seconds


def test_normalize_rejects_unknown_columns_by_name() -> None:
    with pytest.raises(TableError, match=r"unknown column\(s\) \['nat_accuracy', 'zzz'\]"):
        normalize_rows([row("search", "t0", nat_accuracy=0.5, zzz=1)])


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ({"stage": "train"}, r"'stage'.*'train'.*\('search', 'retrain'\)"),
        ({"status": "done"}, r"'status'.*'done'.*'finished'"),
        ({"trial_id": None}, r"'trial_id' is required"),
        ({"seed": 1.5}, r"'seed'.*integers"),
        ({"nat_acc": "high"}, r"'nat_acc'.*numbers"),
        ({"placement": 3}, r"'placement'.*string"),
        ({"started_at": "yesterday-ish"}, r"'started_at'"),
    ],
)
def test_normalize_rejects_bad_values_naming_the_column(values: dict, pattern: str) -> None:
    with pytest.raises(TableError, match=pattern):
        normalize_rows([{**row("search", "t0"), **values}])


def test_table_errors_are_value_errors_and_arnas_errors() -> None:
    assert issubclass(TableError, ValueError) and issubclass(TableError, ArnasError)
    assert issubclass(CorruptTableError, TableError)


def test_atomic_write_keeps_old_file_when_writer_raises(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "results.parquet"
    old = normalize_rows(fake_rows()[:2])
    write_table(old, path)
    before = path.read_bytes()

    def broken_writer(table: pa.Table, where: object) -> None:
        where.write(b"PAR1 partial")  # type: ignore[attr-defined]  # half the new table
        raise OSError("disk full")

    monkeypatch.setattr(tbl.pq, "write_table", broken_writer)
    with pytest.raises(OSError, match="disk full"):
        write_table(normalize_rows(fake_rows()), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.parquet"]  # no temp left
    monkeypatch.undo()
    pd.testing.assert_frame_equal(read_table(path), old)


def test_invalid_frame_is_refused_before_touching_the_file(tmp_path: Path) -> None:
    path = tmp_path / "results.parquet"
    write_table(normalize_rows(fake_rows()), path)
    before = path.read_bytes()
    with pytest.raises(TableError):
        write_table(pd.DataFrame([{**row("search", "x"), "bogus": 1}]), path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_error_names_file_and_recovery(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "run" / "results.parquet"
    write_table(normalize_rows(fake_rows()), path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not parquet at all" * 10,
                      "empty": b""}[damage])
    with pytest.raises(CorruptTableError) as info:
        read_table(path)
    message = str(info.value)
    assert str(path) in message
    assert "arnas-ray sweep resume RUN_DIR" in message and "delete it" in message


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        read_table(tmp_path / "nope.parquet")


def test_read_fills_columns_missing_from_an_older_file(tmp_path: Path) -> None:
    path = tmp_path / "old.parquet"
    pq.write_table(pa.table({"sweep_id": ["s"], "stage": ["search"], "trial_id": ["t"],
                             "status": ["finished"], "nat_acc": [0.5]}), path)
    df = read_table(path)
    assert list(df.columns) == SCHEMA.names
    assert df.loc[0, "nat_acc"] == 0.5 and pd.isna(df.loc[0, "pgd_acc"])


def test_read_refuses_unknown_columns_in_file(tmp_path: Path) -> None:
    path = tmp_path / "odd.parquet"
    pq.write_table(pa.table({"sweep_id": ["s"], "stage": ["search"], "trial_id": ["t"],
                             "status": ["finished"], "mystery": [1]}), path)
    with pytest.raises(TableError, match="mystery"):
        read_table(path)


def test_upsert_replaces_by_stage_and_trial_id(tmp_path: Path) -> None:
    path = tmp_path / "results.parquet"
    upsert_rows(path, [row("search", "a", status="running"), row("search", "b"),
                       row("retrain", "a", status="pending")])
    out = upsert_rows(path, [row("search", "a", nat_acc=0.9), row("search", "c"),
                             row("search", "c", nat_acc=0.1)])
    back = read_table(path)
    pd.testing.assert_frame_equal(back, out)
    keys = list(zip(back["stage"], back["trial_id"]))
    assert keys == [("search", "a"), ("search", "b"), ("retrain", "a"), ("search", "c")]
    by_key = back.set_index(["stage", "trial_id"])
    assert by_key.loc[("search", "a"), "status"] == "finished"
    assert by_key.loc[("search", "a"), "nat_acc"] == 0.9
    assert by_key.loc[("search", "c"), "nat_acc"] == 0.1  # the last duplicate wins
    assert by_key.loc[("retrain", "a"), "status"] == "pending"


def test_upsert_leaves_a_corrupt_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "results.parquet"
    path.write_bytes(b"garbage")
    with pytest.raises(CorruptTableError):
        upsert_rows(path, [row("search", "a")])
    assert path.read_bytes() == b"garbage"


_KEY = st.tuples(st.sampled_from(["search", "retrain"]), st.sampled_from("abcd"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.tuples(_KEY, st.integers(0, 99)), max_size=5), max_size=4))
def test_upsert_never_duplicates_and_keeps_last_value(tmp_path: Path, batches: list) -> None:
    path = tmp_path / "prop.parquet"
    path.unlink(missing_ok=True)
    model: dict[tuple[str, str], int] = {}
    for batch in batches:
        upsert_rows(path, [row(s, t, epochs=v) for (s, t), v in batch])
        for key, v in batch:
            model[key] = v
    if not model:
        assert not path.exists() or read_table(path).empty
        return
    df = read_table(path)
    keys = list(zip(df["stage"], df["trial_id"]))
    assert len(keys) == len(set(keys))
    assert {k: int(v) for k, v in zip(keys, df["epochs"])} == model


def test_write_read_upsert_through_a_pyarrow_filesystem(tmp_path: Path) -> None:
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    df = normalize_rows(fake_rows())
    write_table(df, "bucket/run/results.parquet", filesystem=fs)
    assert sorted(p.name for p in (tmp_path / "bucket" / "run").iterdir()) == ["results.parquet"]
    pd.testing.assert_frame_equal(read_table("bucket/run/results.parquet", filesystem=fs), df)
    out = upsert_rows("bucket/run/results.parquet", [row("search", "s0", nat_acc=0.99)],
                      filesystem=fs)
    assert len(out) == len(df)
    assert read_table(tmp_path / "bucket/run/results.parquet").loc[0, "nat_acc"] == 0.99


def test_file_uri_and_read_run(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    uri = (run / "results.parquet").as_uri()
    df = read_table(uri)
    assert len(df) == len(fake_rows())
    pd.testing.assert_frame_equal(read_run(run), df)
    pd.testing.assert_frame_equal(read_run(run.as_uri()), df)
    write_table(df.iloc[:1], uri)
    assert len(read_run(run)) == 1


def test_memory_uri_through_fsspec(monkeypatch: pytest.MonkeyPatch) -> None:
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    uri = "memory://arnas-test-bucket/run/results.parquet"
    try:
        df = normalize_rows(fake_rows())
        write_table(df, uri)
        assert [p["name"] for p in memory.ls("/arnas-test-bucket/run")] == [
            "/arnas-test-bucket/run/results.parquet"]  # the temporary file was moved
        pd.testing.assert_frame_equal(read_run("memory://arnas-test-bucket/run"), df)
        before = memory.cat_file("/arnas-test-bucket/run/results.parquet")

        def broken_writer(table: pa.Table, where: object) -> None:
            raise OSError("network down")

        monkeypatch.setattr(tbl.pq, "write_table", broken_writer)
        with pytest.raises(OSError, match="network down"):
            write_table(df.iloc[:1], uri)
        monkeypatch.undo()
        assert memory.cat_file("/arnas-test-bucket/run/results.parquet") == before
        assert len(memory.ls("/arnas-test-bucket/run")) == 1  # temp file removed
    finally:
        memory.rm("/arnas-test-bucket", recursive=True)
