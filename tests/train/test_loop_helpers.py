"""arnas_ray._loop: the resume check, the divergence message and the seeding scheme."""

from __future__ import annotations

import doctest
import gc
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arnas_ray._loop as loop_mod
from arnas_ray._loop import (
    check_resumable,
    config_differences,
    diverged,
    read_history,
    steady_gc,
    stream_seed,
    write_history,
)
from arnas_ray.errors import CheckpointError, DivergenceError, FileFormatError


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(loop_mod)
    assert result.attempted >= 8 and result.failed == 0


def test_differences_ignore_free_fields_and_count_missing_ones() -> None:
    saved = {"lr": 0.1, "num_workers": 0, "old_only": 1}
    current = {"lr": 0.1, "num_workers": 4, "new_only": None, "seed": 3}
    assert config_differences(saved, current, free=("num_workers",)) == ["old_only", "seed"]


def test_resume_refusal_names_file_field_both_values_and_the_rest() -> None:
    with pytest.raises(CheckpointError) as info:
        check_resumable({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "c": 4},
                        path="/r/checkpoint.pt", remedy="pass resume=False")
    msg = str(info.value)
    assert msg.startswith("/r/checkpoint.pt: ")
    assert "b=2, but this run has b=5 (1 more field differs: c); pass resume=False" in msg
    assert "\n" not in msg


def test_resume_refusal_of_settings_that_are_not_a_mapping() -> None:
    with pytest.raises(CheckpointError, match="ck.pt: the checkpoint holds no run settings"):
        check_resumable([1, 2], {"a": 1}, path="ck.pt")


def test_long_values_are_shortened() -> None:
    with pytest.raises(CheckpointError) as info:
        check_resumable({"genotype": "x" * 500}, {"genotype": "y" * 500}, path="p")
    assert len(str(info.value)) < 250 and "..." in str(info.value)


def test_divergence_error_carries_epoch_step_and_the_kept_checkpoint() -> None:
    err = diverged(epoch=2, step=7, what="loss", lrs={"lr": 0.1, "arch_lr": 3e-4},
                   checkpoint="out/checkpoint.pt", checkpoint_epoch=1)
    assert isinstance(err, DivergenceError) and (err.epoch, err.step) == (2, 7)
    assert str(err) == ("non-finite loss at epoch 2, step 7 (lr=0.1, arch_lr=0.0003); lower the "
                        "learning rates; the last good checkpoint 'out/checkpoint.pt' (epoch 1) "
                        "is kept")
    assert "no checkpoint" in str(diverged(epoch=1, step=1, what="x", lrs={}, checkpoint=None))


@settings(max_examples=300, deadline=None)
@given(st.tuples(st.integers(0, 2**40), st.integers(0, 10**6), st.sampled_from("abc")),
       st.tuples(st.integers(0, 2**40), st.integers(0, 10**6), st.sampled_from("abc")))
def test_stream_seeds_are_in_range_and_distinct_for_distinct_streams(a, b) -> None:
    sa, sb = stream_seed(*a), stream_seed(*b)
    assert 0 <= sa < 2**63 and 0 <= sb < 2**63
    assert (sa == sb) == (a == b)


def test_stream_seeds_of_neighbouring_epochs_and_streams_do_not_collide() -> None:
    seeds = {stream_seed(s, e, n) for s in range(5) for e in range(200)
             for n in ("train-data", "train-attack", "val-attack")}
    assert len(seeds) == 5 * 200 * 3


def test_stream_seed_is_stable_across_processes() -> None:
    code = "from arnas_ray._loop import stream_seed; print(stream_seed(3, 4, 'train-data'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "123"}, timeout=60).stdout
    assert int(out) == stream_seed(3, 4, "train-data")


@pytest.mark.parametrize("args", [(-1, 0, "a"), (0, -1, "a"), (0, 0, ""), (True, 0, "a"),
                                  (0.5, 0, "a")])
def test_stream_seed_refuses_bad_arguments(args) -> None:
    with pytest.raises(ValueError):
        stream_seed(*args)


def test_helpers_do_not_import_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None; import arnas_ray._loop; "
            "print(arnas_ray._loop.stream_seed(0, 0, 'x') >= 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_history_round_trip_and_damaged_lines_are_named(tmp_path) -> None:
    path = tmp_path / "history.jsonl"
    records = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": float("nan")}]
    write_history(path, records)
    back = read_history(path)
    assert back[0] == records[0] and back[1]["epoch"] == 2
    path.write_text(path.read_text() + "\n{\"epoch\": 3, \"loss\"\n")
    with pytest.raises(FileFormatError) as info:
        read_history(path)
    assert str(info.value).startswith(f"{path}: line 4 is not a JSON object")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(FileFormatError, match="cannot be read"):
        read_history(path)


def test_steady_gc_freezes_and_restores() -> None:
    """Inside: the objects of before are frozen and the young threshold is raised; on exit,
    even by an exception, both are as before (the caller's own settings kept)."""
    before = gc.get_threshold()
    gc.set_threshold(900, before[1], before[2])
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with steady_gc(young=12_345):
                assert gc.get_threshold() == (12_345, before[1], before[2])
                assert gc.get_freeze_count() > 1000
                raise RuntimeError("boom")
        assert gc.get_threshold() == (900, before[1], before[2])
        assert gc.get_freeze_count() == 0
    finally:
        gc.set_threshold(*before)
