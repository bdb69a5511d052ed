"""Property-based fuzzing of every parser of user input (issue 9, item 1).

Each parser gets >= 2,000 generated inputs: arbitrary JSON/YAML-like values (nested dicts,
lists, strings, ints including huge ones, floats including NaN and inf, booleans, None, and
non-string keys as YAML allows) and mutations of a valid spec (a key dropped, a value replaced
by another type, NaN/inf/huge/negative numbers injected, unknown keys added). The contract:
every input either parses to a valid object or raises :class:`~arnas_ray.errors.SpecError`
(an :class:`~arnas_ray.errors.ArnasError`) whose field names where the problem is; never any
other exception type (a ``TypeError`` from deep inside is a bug) and never a hang.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arnas_ray._config import from_dict
from arnas_ray.errors import ArnasError, SpecError
from arnas_ray.search.config import SearchConfig
from arnas_ray.space.genotype import GENOTYPES, Genotype
from arnas_ray.space.layout import Layout
from arnas_ray.sweep.spec import SweepSpec
from arnas_ray.train.config import RetrainConfig

EXAMPLES = 2000
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
CASE_TIMEOUT_S = 5  # a parser that takes longer on one tiny input "hangs"

# ---- value strategies ----------------------------------------------------------------------
_NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, -1, 10**30, -(10**30), 2**63, 0.5, -0.5, 1e308, -1e308, 5e-324]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
)
_TEXT = st.one_of(
    st.sampled_from(["", "arnas", "darts", "robust", "accurate", "reduce", "mgda", "pgd", "8/255",
                     "1/0", "nan", "inf", "-1", "..", "a/b", "x\x00y", "sep_conv_3x3", "none",
                     "skip_connect", "digits", "synthetic", "cifar10", "max", "min", "nat_acc"]),
    st.text(max_size=8),
)
_SCALARS = st.one_of(st.none(), st.booleans(), _NUMBERS, _TEXT)
_KEYS = st.one_of(_TEXT, st.integers(-3, 3), st.booleans(), st.none(), st.floats(allow_nan=True))


def _containers(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=4))


JSONISH = st.recursive(_SCALARS, _containers, max_leaves=12)

# ---- valid specs and their mutations -------------------------------------------------------
VALID_SWEEP: dict[str, Any] = {
    "name": "tiny", "storage": "/tmp/arnas_fuzz_unused",
    "dataset": {"name": "digits", "image_size": 8, "limit": 400},
    "search": {"channels": 4, "cells": 3, "epochs": 1, "batch_size": 16, "steps_per_epoch": 2,
               "eval_samples": 64, "order": "first",
               "attack": {"kind": "pgd", "eps": "8/255", "alpha": "2/255", "steps": 3}},
    "grid": {"placement": ["arnas", "robust-first", {"placement": ["accurate", "robust"],
                                                     "channel_ratios": [1, 2]}],
             "channel_ratios": [None], "equal_width": True, "strategy": ["mgda"], "seed": [2]},
    "selection": {"objectives": {"nat_acc": "max", "pgd_acc": "max"}, "top_k": 2},
    "retrain": {"channels": 4, "cells": 3, "epochs": 1, "batch_size": 32, "steps_per_epoch": 3,
                "cutout": 0, "val_samples": 64},
    "evaluation": {"attacks": ["natural", "fgsm", "pgd20"], "limit": 64},
    "resources": {"cpu": 1, "gpu": 0},
}
VALID_RETRAIN: dict[str, Any] = {
    "placement": ["accurate", "robust"], "channel_ratios": [1, 2.5], "channels": 8, "cells": 4,
    "epochs": 2, "batch_size": 8, "lr": 0.05, "milestones": [0.25, 0.5], "method": "trades",
    "attack": {"kind": "pgd", "eps": "8/255", "alpha": 0.01, "steps": 2, "clip": [0, 1]},
    "eval_attack": {"kind": "fgsm"}, "steps_per_epoch": 2, "val_samples": 16, "amp": "off",
}
VALID_SEARCH: dict[str, Any] = {
    "placement": "darts", "channel_ratios": [1, 2, 3], "equal_width": True, "channels": 6,
    "cells": 4, "epochs": 1, "arch_betas": [0.5, 0.9], "fixed_weights": [1, 0], "order": "exact",
    "strategy": "fixed", "attack": {"steps": 1}, "steps_per_epoch": 1,
}
VALID_LAYOUT: dict[str, Any] = {"placement": ["accurate", "robust", "x-1"], "channel_ratios": [1, 2, 0.5],
                                "name": "mine"}
VALID_GENOTYPE: dict[str, Any] = GENOTYPES["ARNAS"].to_dict()

_NASTY = st.one_of(
    st.sampled_from([None, True, False, math.nan, math.inf, -math.inf, -1, -(10**30), 10**30, 2**64,
                     0, 0.0, -0.0, "", "???", [], {}, [None], {"x": 1}, [[[]]], "1/0", "x\x00y"]),
    JSONISH,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) into a nested dict/list value, the root included."""
    out = [prefix]
    if isinstance(value, Mapping):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, prefix + (i,))
    return out


def _get(value: Any, path: tuple) -> Any:
    for p in path:
        value = value[p]
    return value


@st.composite
def mutated(draw: st.DrawFn, valid: Mapping[str, Any]) -> Any:
    """A valid spec with 1..3 mutations at random places."""
    value: Any = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(value)
        path = draw(st.sampled_from(paths))
        kind = draw(st.sampled_from(["replace", "drop", "unknown", "scale", "wrap"]))
        if not path:
            if kind == "replace":
                value = copy.deepcopy(draw(_NASTY))
            continue
        parent, last = _get(value, path[:-1]), path[-1]
        if kind == "replace":
            parent[last] = copy.deepcopy(draw(_NASTY))
        elif kind == "drop":
            del parent[last]
        elif kind == "unknown" and isinstance(parent, dict):
            parent[draw(_KEYS)] = copy.deepcopy(draw(_SCALARS))
        elif kind == "scale":
            old = parent[last]
            if isinstance(old, (int, float)) and not isinstance(old, bool):
                parent[last] = old * draw(st.sampled_from([-1, 0, 1e300, 10**40, math.inf, math.nan]))
        elif kind == "wrap":
            old = parent[last]
            parent[last] = draw(st.sampled_from([[old], {"value": old}, str(old)]))
        if not isinstance(value, (dict, list)):
            break
    return value


def inputs(valid: Mapping[str, Any]) -> st.SearchStrategy:
    return st.one_of(JSONISH, mutated(valid), st.dictionaries(st.sampled_from(sorted(valid)), _NASTY,
                                                              max_size=4))


# ---- the contract --------------------------------------------------------------------------
@contextlib.contextmanager
def _time_limit(seconds: int):
    def _raise(signum, frame):
        raise TimeoutError(f"parser ran longer than {seconds} s on one input (a hang)")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def check_contract(parse: Callable[[Any], Any], data: Any, expected: type) -> None:
    """``parse(data)`` returns an ``expected`` or raises a SpecError naming a field."""
    try:
        with _time_limit(CASE_TIMEOUT_S):
            out = parse(data)
    except SpecError as exc:
        text = str(exc)
        assert "\n" not in text.strip() or exc.field, f"multi-line error without a field: {text!r}"
        if isinstance(data, Mapping):
            assert exc.field or ("unknown" in exc.message and "field" in exc.message), f"SpecError names no field: {text!r}"
        else:
            assert exc.field or "mapping" in exc.message or "list" in exc.message, text
        assert isinstance(exc, ArnasError)
        return
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{type(exc).__name__} escaped the parser (want SpecError): {exc!r}\ninput: {data!r}")
    assert isinstance(out, expected), type(out)


def test_valid_specs_parse():
    """The seeds of the mutations are themselves valid (else the fuzzer only tests errors)."""
    SweepSpec.from_dict(copy.deepcopy(VALID_SWEEP))
    from_dict(RetrainConfig, copy.deepcopy(VALID_RETRAIN))
    SearchConfig.from_dict(copy.deepcopy(VALID_SEARCH))
    Layout.from_spec(copy.deepcopy(VALID_LAYOUT))
    assert Genotype.from_dict(copy.deepcopy(VALID_GENOTYPE)) == GENOTYPES["ARNAS"]


@FUZZ
@given(inputs(VALID_SWEEP))
def test_fuzz_sweep_spec(data):
    check_contract(SweepSpec.from_dict, data, SweepSpec)


@FUZZ
@given(inputs(VALID_RETRAIN))
def test_fuzz_retrain_config(data):
    check_contract(lambda d: from_dict(RetrainConfig, d), data, RetrainConfig)


@FUZZ
@given(inputs(VALID_SEARCH))
def test_fuzz_search_config(data):
    check_contract(SearchConfig.from_dict, data, SearchConfig)


@FUZZ
@given(st.one_of(inputs(VALID_LAYOUT), _TEXT), st.one_of(st.none(), JSONISH,
                                                        st.lists(_NUMBERS, max_size=4)))
def test_fuzz_layout(value, ratios):
    check_contract(lambda v: Layout.from_spec(v, ratios), value, Layout)


@FUZZ
@given(inputs(VALID_GENOTYPE))
def test_fuzz_genotype(data):
    check_contract(Genotype.from_dict, data, Genotype)


@FUZZ
@given(st.one_of(st.text(max_size=40), st.sampled_from(["", "{", "[]", "null", '{"cells": 1}',
                                                         '{"cells": {"a": {"edges": [["x", 0]]}}}'])))
def test_fuzz_genotype_json_text(text):
    check_contract(Genotype.from_json, text, Genotype)


# ---- regressions the fuzzer found (each raised TypeError or named no field before the fix) --
def test_mixed_type_keys_in_genotype_are_a_spec_error():
    with pytest.raises(SpecError, match="unknown field") as info:
        Genotype.from_dict({"": None, 0: None})  # sorted() of int and str keys was a TypeError
    assert info.value.field.startswith("genotype.")


def test_non_string_layout_key_is_named():
    with pytest.raises(SpecError) as info:
        Layout.from_spec({"placement": "arnas", None: 1, 2: 3})
    assert info.value.field in ("2", "None") and isinstance(info.value.field, str)


# ---- the command line: one line on stderr, exit status 2 ------------------------------------
@pytest.mark.parametrize(("text", "field"), [
    ("name: x\nsearch: {epochs: -1}\n", "search.epochs"),
    ("name: x\nsearch: {lr: .nan}\n", "search.lr"),
    ("name: x\ngrid: {placement: [nope]}\n", "grid.placement[0]"),
    ("name: x\nretrain: {channels: [1, 2]}\n", "retrain.channels"),
    ("name: x\nbogus: 1\n", "bogus"),
    ("name: x\n1: 2\n", "1"),
    ("[1, 2, 3]\n", "spec"),
    ("name: x\nsearch: {attack: {eps: 1/0}}\n", "search.attack.eps"),
    ("{{{{ not yaml\n", "spec"),
])
def test_cli_validate_prints_one_line_and_exits_2(tmp_path, capsys, text, field):
    from arnas_ray.cli import main

    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    assert main(["sweep", "validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"arnas-ray: error: {field}"), err
