"""Property-based fuzzing of every file arnas-ray reads (issue 18, item 5).

Each input kind gets >= 2,000 generated files: checkpoints (2,000 of random bytes, text,
truncated and byte-flipped archives, then 1,500 checkpoint contents: missing keys, values of
other types, a network of another genotype or width, tensors of other shapes), genotype JSON (text, bytes,
JSON values, mutations of a valid genotype) and results tables (random bytes, truncated and
flipped Parquet, Parquet files with missing, unknown or mistyped columns); reading genotype
files, ``history.jsonl`` files and the retrain history kept in a checkpoint get a few hundred. The contract: a file either loads or raises the
project's error for it, whose message is one line that starts with the file and never advises
loading unsafely; never another exception type, never a traceback from the command line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arnas_ray._genotype import BaseGenotype
from arnas_ray._loop import read_history
from arnas_ray.checkpoint import load_checkpoint, save_checkpoint
from arnas_ray.cli import main
from arnas_ray.data import load_dataset
from arnas_ray.errors import CheckpointError, FileFormatError, SpecError
from arnas_ray.results.table import (
    COLUMNS,
    SCHEMA,
    TableError,
    normalize_rows,
    table_from_bytes,
    table_to_bytes,
)
from arnas_ray.space import GENOTYPES, Genotype
from arnas_ray.train import RetrainConfig
from arnas_ray.train._model import build_network, metadata, network_from_state
from arnas_ray.train._state import build_run, check_compatible, restore

EXAMPLES = 2000
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
SOME = settings(FUZZ, max_examples=300)

# A one-node-per-cell genotype at width 2: a real network with few tensors (fast to load).
TINY = Genotype.from_dict({"cells": {t: {"edges": [["sep_conv_3x3", 0], ["skip_connect", 1]]}
                                     for t in ("accurate", "reduce", "robust")}})
CONFIG = RetrainConfig(channels=2, cells=3, cutout=0, auxiliary=False, epochs=2)
META = metadata(TINY, CONFIG, num_classes=2, in_channels=3, image_size=8, dataset="synthetic")
torch.manual_seed(0)
WEIGHTS = build_network(TINY, CONFIG, 2, 3).state_dict()
SMALL = {**META, "epoch": 1, "model": {"w": torch.zeros(3), "b": torch.ones(2, 2)}}


def _bytes_of(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


SMALL_BYTES = _bytes_of(SMALL)


_DIR = Path(tempfile.mkdtemp(prefix="arnas-fuzz-"))  # one folder: a new one per case is slow


@contextlib.contextmanager
def _file(data: bytes, name: str = "best.pt") -> Iterator[Path]:
    path = _DIR / name
    path.write_bytes(data)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    for child in _DIR.iterdir():
        child.unlink()
    _DIR.rmdir()


def _check_message(exc: BaseException, path: Path | str) -> None:
    text = str(exc)
    assert text.startswith(f"{path}: "), text
    assert "\n" not in text, text
    assert "weights_only=False" not in text and "weights_only` set to `False" not in text, text


def _flip(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out)


_EDITS = st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1, max_size=8)


def _damaged(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, text, truncations and byte flips of ``valid``."""
    return st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.integers(0, len(valid) - 1).map(lambda n: valid[:n]),
        _EDITS.map(lambda e: _flip(valid, e)),
        st.tuples(st.integers(0, len(valid) - 1), st.binary(min_size=1, max_size=64)).map(
            lambda t: valid[: t[0]] + t[1] + valid[t[0] + len(t[1]):]),
    )


# ---- checkpoints ---------------------------------------------------------------------------
@FUZZ
@given(_damaged(SMALL_BYTES))
def test_fuzz_checkpoint_files(data: bytes) -> None:
    with _file(data) as path:
        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            _check_message(exc, path)
            return
        with pytest.raises(CheckpointError) as info:  # SMALL's weights fit no network
            network_from_state(state, str(path))
        _check_message(info.value, path)


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(),
                    st.text(max_size=12), st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
                    st.sampled_from([GENOTYPES["ARNAS"].to_json(), "{}", "[1]", "digits"]))
_SHAPES = st.lists(st.integers(0, 5), max_size=3).map(tuple)


def _weights() -> st.SearchStrategy[Any]:
    """The tiny network's weights with entries dropped, added, reshaped or replaced."""
    keys = sorted(WEIGHTS)
    edit = st.one_of(
        st.tuples(st.just("drop"), st.sampled_from(keys), st.just(())),
        st.tuples(st.just("add"), st.text(max_size=6), _SHAPES),
        st.tuples(st.just("shape"), st.sampled_from(keys), _SHAPES),
        st.tuples(st.just("value"), st.sampled_from(keys), st.just(())),
    )

    def apply(edits: list[tuple[str, str, tuple[int, ...]]]) -> dict[str, Any]:
        out: dict[str, Any] = dict(WEIGHTS)
        for kind, key, shape in edits:
            if kind == "drop":
                out.pop(key, None)
            elif kind == "value":
                out[key] = "not a tensor"
            else:
                out[key] = torch.zeros(shape)
        return out

    return st.one_of(st.lists(edit, min_size=1, max_size=4).map(apply), _VALUES)


def _contents() -> st.SearchStrategy[dict[str, Any]]:
    """A valid best.pt of the tiny network with keys dropped or given other values."""
    keys = sorted({*META, "model", "epoch"})
    edit = st.tuples(st.sampled_from(keys), st.one_of(st.just(None), _VALUES))

    def apply(args: tuple[list[tuple[str, Any]], Any]) -> dict[str, Any]:
        edits, weights = args
        out: dict[str, Any] = {**META, "epoch": 1, "model": weights}
        for key, value in edits:
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return out

    return st.tuples(st.lists(edit, max_size=3), _weights()).map(apply)


@settings(FUZZ, max_examples=1500)  # with the 2,000 files above: 3,500 checkpoint cases
@given(_contents())
def test_fuzz_checkpoint_contents(state: dict[str, Any]) -> None:
    try:
        net, _ = network_from_state(state, "ck.pt")
    except CheckpointError as exc:
        _check_message(exc, "ck.pt")
        return
    assert sum(p.numel() for p in net.parameters()) > 0


@pytest.mark.parametrize(("genotype", "changes"), [
    (GENOTYPES["ARNAS"], {}),  # another genotype
    (TINY, {"channels": 4}),  # another width
    (TINY, {"cells": 4}),  # another depth
])
def test_checkpoint_of_another_network_names_the_mismatch(genotype: Genotype,
                                                          changes: dict[str, Any]) -> None:
    """The weights of one network under the description of another are refused by name."""
    config = RetrainConfig(**{**{"channels": 2, "cells": 3, "cutout": 0, "auxiliary": False},
                              **changes})
    state = {**metadata(genotype, config, num_classes=2, in_channels=3, image_size=8,
                        dataset="synthetic"), "model": WEIGHTS}
    with pytest.raises(CheckpointError) as info:
        network_from_state(state, "other.pt")
    _check_message(info.value, "other.pt")
    assert "the weights do not fit the network it describes" in str(info.value)


# ---- the retrain history kept in checkpoint.pt ----------------------------------------------
@pytest.fixture(scope="module")
def run_and_state() -> tuple[Any, dict[str, Any]]:
    data = load_dataset("synthetic", image_size=8, num_classes=2, num_train=16, num_test=4)
    run = build_run(TINY, CONFIG, data, torch.device("cpu"), None)
    history = [{"epoch": 1, "train_loss": 1.0, "val_nat_acc": 0.5, "val_pgd_acc": 0.25}]
    state = {**run.meta, "epoch": 1, "model": run.model.state_dict(),
             "optimizer": run.optimizer.state_dict(), "rng": {"torch": torch.get_rng_state()},
             "history": history, "best": {"epoch": 1, "metric": 0.25,
                                          "model": run.model.state_dict()}, "wall_s": 1.0}
    return run, state


_JSON_LINES = st.dictionaries(st.sampled_from(["epoch", "loss", "x"]),
                              st.one_of(st.integers(-2, 5), st.floats(), st.text(max_size=3),
                                        st.none()), max_size=3).map(json.dumps)
_HISTORY_KEYS = st.sampled_from(["epoch", "history", "best", "rng", "optimizer", "wall_s",
                                 "config", "genotype", "format", "dataset"])


@SOME
@given(st.lists(st.tuples(_HISTORY_KEYS, st.one_of(st.just(None), _VALUES, st.lists(
    st.dictionaries(st.text(max_size=5), _VALUES, max_size=3), max_size=3))), min_size=1,
    max_size=3))
def test_fuzz_resume_history(run_and_state: tuple[Any, dict[str, Any]],
                             edits: list[tuple[str, Any]]) -> None:
    run, good = run_and_state
    state = dict(good)
    for key, value in edits:
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    path = Path("run/checkpoint.pt")
    try:
        check_compatible(state, run, path)
        restore(run, state, path)
    except CheckpointError as exc:
        _check_message(exc, path)
        return
    assert run.start == len(run.history) == 1


@SOME
@given(st.lists(st.one_of(st.text(max_size=20), _JSON_LINES), max_size=4))
def test_fuzz_history_files(lines: list[str]) -> None:
    with _file("\n".join(lines).encode("utf-8", "surrogatepass"), "history.jsonl") as path:
        try:
            records = read_history(path)
        except FileFormatError as exc:
            _check_message(exc, path)
            return
        assert all(isinstance(r["epoch"], int) for r in records)


# ---- genotype JSON ---------------------------------------------------------------------------
# Two levels of JSON values (a recursive strategy costs several times more per case).
_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-5, 10), st.floats(), st.text(max_size=6),
                  st.sampled_from(["sep_conv_3x3", "skip_connect", "none", "accurate"]))
_JSON = st.one_of(_LEAF, st.lists(_LEAF, max_size=3), st.lists(st.lists(_LEAF, max_size=2),
                                                                max_size=2),
                  st.dictionaries(st.sampled_from(["cells", "edges", "concat", "name", "x"]),
                                  _LEAF, max_size=3))


def _genotype_mutations() -> st.SearchStrategy[Any]:
    base = GENOTYPES["ARNAS"].to_dict()
    paths = [("cells",), ("cells", "accurate"), ("cells", "accurate", "edges"),
             ("cells", "accurate", "edges", 0), ("cells", "accurate", "edges", 0, 0),
             ("cells", "reduce", "edges", 3, 1), ("cells", "robust", "concat"),
             ("cells", "robust", "concat", 1)]

    def apply(args: tuple[int, Any]) -> Any:
        where, value = args
        out = json.loads(json.dumps(base))
        node = out
        for key in paths[where][:-1]:
            node = node[key]
        node[paths[where][-1]] = value
        return out

    return st.tuples(st.integers(0, len(paths) - 1), _JSON).map(apply)


_GENOTYPE_TEXT = st.one_of(
    st.text(max_size=30),
    _JSON.map(json.dumps),
    _genotype_mutations().map(json.dumps),
)


@FUZZ
@given(_GENOTYPE_TEXT)
def test_fuzz_genotype_json(text: str) -> None:
    for cls in (Genotype, BaseGenotype):  # the space layer and the torch-free core
        try:
            g = cls.from_json(text)
        except SpecError as exc:
            assert "\n" not in str(exc)
            continue
        assert cls.from_json(g.to_json()) == g


@settings(FUZZ, max_examples=500)  # the parser is fuzzed above; this covers reading the file
@given(st.one_of(_genotype_mutations().map(lambda g: json.dumps(g).encode()),
                 st.binary(max_size=40)))
def test_fuzz_genotype_files(data: bytes) -> None:
    with _file(data, "genotype.json") as path:
        try:
            Genotype.resolve(str(path))
        except FileFormatError as exc:
            _check_message(exc, path)


# ---- results tables -------------------------------------------------------------------------
_ROW = {"sweep_id": "s", "stage": "search", "trial_id": "t0", "status": "finished",
        "nat_acc": 0.5, "pgd_acc": 0.25}
TABLE_BYTES = table_to_bytes(normalize_rows([_ROW]))
_COLUMN_VALUES = st.one_of(st.lists(st.one_of(st.none(), st.integers(-3, 3)), min_size=1,
                                    max_size=3),
                           st.lists(st.one_of(st.none(), st.text(max_size=6)), min_size=1,
                                    max_size=3),
                           st.lists(st.one_of(st.none(), st.floats()), min_size=1, max_size=3))


@st.composite
def _parquet_tables(draw: st.DrawFn) -> bytes:
    """Parquet files whose columns are a random subset of the schema's (or unknown ones),
    with values of random types."""
    names = draw(st.lists(st.one_of(st.sampled_from(list(COLUMNS)), st.text(max_size=5)),
                          min_size=1, max_size=5, unique=True))
    n = draw(st.integers(1, 3))
    columns = {}
    for name in names:
        values = draw(_COLUMN_VALUES)
        columns[name] = (values * 3)[:n]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue().to_pybytes()


@FUZZ
@given(st.one_of(_damaged(TABLE_BYTES), _parquet_tables()))
def test_fuzz_results_tables(data: bytes) -> None:
    try:
        df = table_from_bytes(data, "results.parquet")
    except TableError as exc:
        text = str(exc)
        assert "results.parquet" in text and "\n" not in text, text
        return
    assert list(df.columns) == [f.name for f in SCHEMA]


# ---- the command line ------------------------------------------------------------------------
def _unsafe_checkpoint(path: Path) -> None:
    torch.save({"model": {"w": torch.zeros(1)}, "x": torch.nn.Linear(1, 1)}, path)


_EVAL_INPUTS = {
    "text": lambda p: p.write_text("root:x:0:0:root:/root:/bin/bash\n"),
    "random-bytes": lambda p: p.write_bytes(os.urandom(2048)),
    "truncated-zip": lambda p: p.write_bytes(SMALL_BYTES[: len(SMALL_BYTES) // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "search-checkpoint": lambda p: save_checkpoint(p, {"epoch": 0, "model": {}, "history": []}),
    "not-a-dict": lambda p: torch.save([1, 2, 3], p),
    "unsafe-object": _unsafe_checkpoint,
    "wrong-shapes": lambda p: save_checkpoint(p, {**META, "model": {
        k: torch.zeros(1) for k in WEIGHTS}}),
    "another-genotype": lambda p: save_checkpoint(p, {**metadata(
        GENOTYPES["ARNAS"], CONFIG, num_classes=2, in_channels=3, image_size=8,
        dataset="synthetic"), "model": WEIGHTS}),
    "bad-metadata": lambda p: save_checkpoint(p, {**META, "num_classes": -3, "model": WEIGHTS}),
}


@pytest.mark.parametrize("kind", sorted(_EVAL_INPUTS))
def test_eval_command_reports_a_bad_checkpoint_in_one_line(
        kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / f"{kind}.pt"
    _EVAL_INPUTS[kind](path)
    assert main(["eval", str(path), "--attacks", "natural"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"arnas-ray: error: {path}: "), captured.err
    assert "Traceback" not in captured.err and "weights_only=False" not in captured.err
    assert captured.out == ""


def test_eval_of_etc_passwd_is_one_line() -> None:
    """The reproduction of issue 18, as a user types it."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "arnas_ray", "eval", "/etc/passwd",
                           "--attacks", "natural"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("arnas-ray: error: /etc/passwd: "), proc.stderr


@pytest.mark.parametrize("text", ['{"cells": {"a": {"edges": [["conv_9x9", 0]]}}}', "{", "\xff"])
def test_genotype_command_reports_a_bad_file_in_one_line(
        text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "g.json"
    path.write_bytes(text.encode("latin-1"))
    assert main(["genotype", "show", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"arnas-ray: error: {path}: "), err
