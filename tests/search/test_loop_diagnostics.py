"""run_search's diagnostics end to end: per-epoch summaries, per-step records in the result,
the checkpoint and steps.jsonl, exact resume, the degeneracy warning, diagnostics off."""

from __future__ import annotations

import json
import logging
import math

import pytest

from arnas_ray._diagnostics import EPOCH_FIELDS, STEP_FIELDS
from arnas_ray.checkpoint import load_checkpoint
from arnas_ray.cli import main
from arnas_ray.search import SearchConfig, run_search
from arnas_ray.search.loop import CHECKPOINT_NAME, STEPS_NAME

from .conftest import loop_config

TIMING = {"epoch_s", "search_s", "images_per_s"}


def _config(**kw) -> SearchConfig:
    return loop_config(**{"order": "first", **kw})


@pytest.fixture(scope="module")
def degenerate(data, tmp_path_factory):
    """The default weighting (adv_coef 0.1, no normalisation): gamma = 0 at every step here."""
    out = tmp_path_factory.mktemp("degenerate")
    messages: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("arnas_ray.search.loop")
    logger.addHandler(handler)
    try:
        result = run_search(_config(), data, "cpu", checkpoint_dir=out)
    finally:
        logger.removeHandler(handler)
    return out, result, messages


def _strip(history):
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def test_epoch_metrics_hold_the_step_summaries(degenerate):
    _, result, _ = degenerate
    assert len(result.history) == 2 and len(result.steps) == 4
    for h in result.history:
        for key in (*EPOCH_FIELDS, "genotype_changes", "entropy_mean", "degeneracy"):
            assert key in h, key
        assert h["gamma_frac_0"] == 1.0 and h["gamma_min"] == h["gamma_max"] == 0.0
        assert h["descent_frac"] == 1.0 and -1.0 <= h["cos_mean"] <= 1.0
        assert h["norm_nat_mean"] > h["norm_adv_mean"] > 0  # why gamma is 0: the shorter one wins
        assert h["norm_d_mean"] == pytest.approx(h["norm_adv_mean"])
        assert isinstance(h["genotype_changes"], int) and 0 <= h["genotype_changes"] <= 24
        assert 0 < h["entropy_mean"] <= math.log(7) + 1e-6
        json.dumps(h, allow_nan=True)
    recs = result.steps
    assert [(r["epoch"], r["step"]) for r in recs] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(set(STEP_FIELDS) <= set(r) and r["descent"] is True for r in recs)
    assert result.history[-1]["gamma_last"] == recs[-1]["gamma"]


def test_a_degenerate_search_is_flagged_and_logged(data, degenerate, caplog):
    _, result, _ = degenerate
    assert result.degeneracy is not None and "only the adversarial objective" in result.degeneracy
    assert result.history[-1]["degeneracy"] == result.degeneracy
    assert result.to_dict()["degeneracy"] == result.degeneracy
    with caplog.at_level(logging.WARNING, logger="arnas_ray.search.loop"):
        balanced = run_search(_config(adv_coef=1.0), data, "cpu")
    assert balanced.degeneracy is None and all(h["degeneracy"] == "" for h in balanced.history)
    assert not [r for r in caplog.records if "degenerate" in r.getMessage()]
    assert sum(0.0 < r["gamma"] < 1.0 for r in balanced.steps) >= 3  # a dynamic weighting
    assert [m for m in degenerate[2] if "degenerate MGDA search" in m and result.degeneracy in m]


def test_step_records_are_checkpointed_written_and_resumed_exactly(data, degenerate, tmp_path):
    out, full, _ = degenerate
    assert load_checkpoint(out / CHECKPOINT_NAME)["steps"] == full.steps
    lines = (out / STEPS_NAME).read_text().splitlines()
    assert [json.loads(line) for line in lines] == full.steps

    class Stop(Exception):
        pass

    def stop(rec):
        raise Stop

    with pytest.raises(Stop):
        run_search(_config(), data, "cpu", callback=stop, checkpoint_dir=tmp_path)
    assert len((tmp_path / STEPS_NAME).read_text().splitlines()) == 2
    resumed = run_search(_config(), data, "cpu", checkpoint_dir=tmp_path)
    assert resumed.steps == full.steps
    assert _strip(resumed.history) == _strip(full.history)


def test_diagnostics_off_records_gamma_only_and_changes_nothing(data, degenerate):
    _, on, _ = degenerate
    off = run_search(_config(diagnostics=False), data, "cpu")
    assert off.alphas == on.alphas
    assert [r["gamma"] for r in off.steps] == [r["gamma"] for r in on.steps]
    assert all(r["norm_nat"] is None and r["descent"] is None for r in off.steps)
    h = off.history[-1]
    assert h["gamma_frac_0"] == 1.0 and math.isnan(h["cos_mean"]) and math.isnan(h["descent_frac"])
    assert off.degeneracy == on.degeneracy


def test_cli_writes_steps_and_prints_the_warning(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["search", "--dataset", "synthetic", "--image-size", "8", "--data-limit", "40", "--channels", "4",
                 "--cells", "3", "--batch-size", "4", "--steps-per-epoch", "2", "--eval-samples", "4",
                 "--order", "first", "--epochs", "1", "--fd-radius", "0.02", "--device", "cpu", "--no-progress",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    steps = [json.loads(line) for line in (out / STEPS_NAME).read_text().splitlines()]
    assert [s["step"] for s in steps] == [0, 1]
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert history[0]["gamma_frac_0"] == sum(s["gamma"] == 0.0 for s in steps) / 2
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["fd_radius"] == 0.02
    warning = history[-1]["degeneracy"]
    assert "only the adversarial objective" in warning  # adv_coef 0.1: gamma = 0 throughout
    assert result["degeneracy"] == warning and f"warning: the MGDA search {warning}" in printed


def test_a_checkpoint_from_before_the_new_fields_resumes_and_another_radius_is_refused(data, degenerate,
                                                                                        tmp_path):
    import shutil

    from arnas_ray.checkpoint import save_checkpoint
    from arnas_ray.errors import CheckpointError

    out, full, _ = degenerate
    shutil.copytree(out, tmp_path / "old")
    state = load_checkpoint(tmp_path / "old" / CHECKPOINT_NAME)
    for key in ("fd_radius", "diagnostics"):  # written before these fields existed: their defaults
        del state["config"][key]
    save_checkpoint(tmp_path / "old" / CHECKPOINT_NAME, state)
    again = run_search(_config(), data, "cpu", checkpoint_dir=tmp_path / "old")  # finished: no step
    assert again.steps == full.steps and again.alphas == full.alphas
    with pytest.raises(CheckpointError, match=r"fd_radius=0.01, but this run has fd_radius=0.02"):
        run_search(_config(fd_radius=0.02), data, "cpu", checkpoint_dir=out)
