"""`arnas-ray sweep validate`: malformed specs exit 2 with a message naming the field; a valid
spec prints the expanded trial list. No Ray needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from arnas_ray.cli import main
from arnas_ray.sweep import SweepSpec, load_spec
from arnas_ray.sweep.faults import DIVERGE_LR, FAULTS_ENV, Faults

from ._specs import GRID_KEYS, tiny_spec, write_spec

#: (case id, overrides of the tiny spec, field path the message must start with, words it must hold)
BAD_SPECS: list[tuple[str, dict[str, Any], str, tuple[str, ...]]] = [
    ("negative-epochs", {"search": {"epochs": -1}}, "search.epochs", ("epochs > 0", "-1")),
    ("unknown-placement", {"grid": {"placement": ["arnas", "nowhere"]}}, "grid.placement[1]",
     ("'nowhere'", "robust-first")),
    ("placement-wrong-type", {"grid": {"placement": 5}}, "grid.placement[0]", ("preset name", "5")),
    ("ratios-wrong-length", {"grid": {"channel_ratios": [[1, 2]]}}, "grid.channel_ratios[0]",
     ("3 stages", "2 ratios")),
    ("ratio-zero", {"grid": {"channel_ratios": [[1, 0, 2]]}}, "grid.channel_ratios[0][1]",
     ("0 < ratio",)),
    ("ratio-negative", {"grid": {"channel_ratios": [[1, 2, 2], [1, -2, 2]]}}, "grid.channel_ratios[1][1]",
     ("0 < ratio", "-2")),
    ("fractional-gpu-above-1", {"resources": {"gpu": 1.5}}, "resources.gpu", ("1.5",)),
    ("two-gpus-per-trial", {"resources": {"gpu": 2}}, "resources.gpu", ("one trial uses one device", "gpu=2")),
    ("zero-cpu", {"resources": {"cpu": 0}}, "resources.cpu", ("cpu > 0",)),
    ("unknown-search-algorithm", {"search_algorithm": "bayes"}, "search_algorithm",
     ("'bayes'", "optuna")),
    ("unknown-objective", {"selection": {"objectives": {"flops_per_joule": "max"}}}, "selection.objectives",
     ("'flops_per_joule'", "pgd_acc")),
    ("unknown-direction", {"selection": {"objectives": {"nat_acc": "up"}}}, "selection.objectives.nat_acc",
     ("'up'", "'max'")),
    ("missing-dataset-root", {"dataset": {"name": "cifar10"}}, "dataset.root", ("set dataset.root",)),
    ("unknown-key", {"epochs": 3}, "epochs", ("unknown field", "valid fields")),
    ("unknown-nested-key", {"search": {"lrr": 0.1}}, "search.lrr", ("unknown field",)),
    ("duplicate-seeds", {"grid": {"seed": [1, 1]}}, "grid.seed", ("repeats a seed",)),
    ("string-for-int", {"search": {"channels": "eight"}}, "search.channels", ("integer", "'eight'")),
    ("string-for-bool", {"grid": {"equal_width": "yes"}}, "grid.equal_width", ("true or false",)),
    ("zero-max-concurrent", {"max_concurrent": 0}, "max_concurrent", ("max_concurrent > 0",)),
    ("negative-max-failures", {"max_failures": -1}, "max_failures", ("max_failures >= 0",)),
    ("name-not-a-directory", {"name": "../evil"}, "name", ("'../evil'",)),
    ("unknown-attack", {"evaluation": {"attacks": ["natural", "cw"]}}, "evaluation.attacks[1]",
     ("'cw'", "pgd20")),
    ("image-size-too-small", {"dataset": {"image_size": 2}}, "dataset.image_size", ("4 <= image_size",)),
    ("unknown-order", {"search": {"order": "third"}}, "search.order", ("'third'", "'second'")),
    ("unknown-strategy", {"grid": {"strategy": ["magic"]}}, "grid.strategy[0]", ("'magic'", "mgda")),
    ("zero-top-k", {"selection": {"top_k": 0}}, "selection.top_k", ("top_k > 0",)),
    ("zero-retrain-epochs", {"retrain": {"epochs": 0}}, "retrain.epochs", ("epochs >= 1",)),
    ("faults-are-not-a-spec-field", {"test_faults": {"diverge": [GRID_KEYS[0]]}}, "test_faults",
     ("unknown field",)),
    ("failed-fraction-above-1", {"max_failed_fraction": 1.5}, "max_failed_fraction",
     ("0 <= max_failed_fraction <= 1",)),
    ("objective-not-evaluated", {"evaluation": {"objectives": {"aa_acc": "max"}}}, "evaluation.objectives",
     ("'aa_acc'", "pgd20_acc")),
    ("objective-direction", {"evaluation": {"objectives": {"pgd20_acc": "high"}}},
     "evaluation.objectives.pgd20_acc", ("'high'",)),
    ("unknown-scheduler", {"scheduler": {"kind": "pbt"}}, "scheduler.kind", ("'pbt'", "asha")),
    ("scheduler-metric", {"scheduler": {"kind": "asha", "metric": "loss"}}, "scheduler.metric", ("'loss'",)),
    ("scheduler-grace", {"scheduler": {"kind": "asha", "grace_period": 5}}, "scheduler.grace_period",
     ("grace_period <= search.epochs",)),
    ("scheduler-reduction", {"scheduler": {"reduction_factor": 1}}, "scheduler.reduction_factor",
     ("reduction_factor > 1",)),
    ("negative-time-budget", {"budget": {"time_s": -5}}, "budget.time_s", ("time_s > 0",)),
    ("trial-budget-on-a-grid", {"budget": {"trials": 3}}, "budget.trials", ("random or optuna",)),
    ("stop-after-last-epoch", {"stop": {"epochs": 1}}, "stop.epochs", ("stop.epochs < search.epochs",)),
    ("unknown-logger", {"loggers": ["comet"]}, "loggers[0].kind", ("'comet'", "tensorboard")),
    ("logger-not-installed", {"loggers": ["wandb"]}, "loggers[0].kind", ("pip install 'arnas-ray[wandb]'",)),
    ("sampler-ratios", {"search_algorithm": "random", "sampler": {"ratio_low": 3, "ratio_high": 2}},
     "sampler.ratio_low", ("ratio_low < ratio_high",)),
    ("sampler-zero-samples", {"search_algorithm": "random", "sampler": {"num_samples": 0}},
     "sampler.num_samples", ("num_samples > 0",)),
    ("points-on-a-grid", {"sampler": {"points_to_evaluate": [{"placement": "arnas"}]}},
     "sampler.points_to_evaluate", ("random or optuna",)),
    ("point-unknown-field", {"search_algorithm": "optuna", "sampler": {"points_to_evaluate": [{"placement": "arnas",
                                                                                              "lr": 1}]}},
     "sampler.points_to_evaluate[0].lr", ("unknown field",)),
    ("old-optuna-field", {"search_algorithm": "optuna", "optuna": {"num_samples": 4}}, "optuna.num_samples",
     ("moved to sampler.num_samples",)),
    ("optuna-population", {"optuna": {"population_size": 1}}, "optuna.population_size",
     ("population_size >= 2",)),
    ("unknown-selection-mode", {"selection": {"mode": "best"}}, "selection.mode", ("'best'", "'all'")),
    ("grid-normalization", {"grid": {"normalization": ["l3"]}}, "grid.normalization[0]", ("'l3'", "'l2'")),
    ("negative-random-baselines", {"baselines": {"random": -1}}, "baselines.random", ("random >= 0",)),
]


def _validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["sweep", "validate", str(path)])
    out, err = capsys.readouterr()
    return rc, out, err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("arnas-ray: error: ")]
    assert len(lines) == 1, err
    return lines[0].removeprefix("arnas-ray: error: ")


@pytest.mark.parametrize(("overrides", "field", "words"), [c[1:] for c in BAD_SPECS],
                         ids=[c[0] for c in BAD_SPECS])
def test_malformed_spec_exits_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 overrides: dict[str, Any], field: str,
                                                 words: tuple[str, ...]) -> None:
    path = write_spec(tmp_path / "spec.yaml", tiny_spec("bad", tmp_path / "runs", **overrides))
    rc, out, err = _validate(path, capsys)
    assert rc == 2
    assert out == ""  # nothing expanded, nothing started
    message = _error_line(err)
    assert message.startswith(f"{field}: "), message
    for word in words:
        assert word in message, (word, message)
    assert not (tmp_path / "runs").exists()


def test_each_malformed_spec_has_its_own_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    messages = []
    for i, (_, overrides, _, _) in enumerate(BAD_SPECS):
        path = write_spec(tmp_path / f"spec{i}.yaml", tiny_spec("bad", tmp_path / "runs", **overrides))
        rc, _, err = _validate(path, capsys)
        assert rc == 2
        messages.append(_error_line(err))
    assert len(set(messages)) == len(BAD_SPECS) >= 15


def test_yaml_python_tag_is_refused_and_not_executed(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "spec.yaml"
    path.write_text(f'name: !!python/object/apply:os.makedirs ["{marker}"]\n')
    rc, out, err = _validate(path, capsys)
    assert rc == 2 and out == ""
    message = _error_line(err)
    assert message.startswith("spec: ") and "tags" in message and "python/object" in message
    assert not marker.exists()


@pytest.mark.parametrize(("text", "words"), [
    ("- a\n- b\n", ("mapping", "list")),
    ("name: [unclosed\n", ("not valid YAML",)),
], ids=["not-a-mapping", "yaml-syntax"])
def test_unreadable_spec_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                              words: tuple[str, ...]) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    rc, _, err = _validate(path, capsys)
    assert rc == 2
    message = _error_line(err)
    assert message.startswith("spec: ")
    for word in words:
        assert word in message


def test_missing_spec_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _validate(tmp_path / "nope.yaml", capsys)
    assert rc == 2
    assert _error_line(err).startswith("spec: ") and "does not exist" in err


def test_validate_prints_the_expanded_trial_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tiny_spec("ok", tmp_path / "runs", search={"channels": 8})
    path = write_spec(tmp_path / "spec.yaml", data)
    rc, out, err = _validate(path, capsys)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "ok: 4 search trial(s), grid search"
    trials = [ln.strip() for ln in lines[1:5]]
    assert [t.split(":")[0] for t in trials] == list(GRID_KEYS)
    # equal width: the sum of stage widths stays that of arnas at C=8 (8 + 16 + 16 = 40)
    assert "ratios=[1.0, 2.0, 2.0] C=8" in trials[0] and "placement=['accurate', 'accurate', 'robust']" in trials[0]
    assert "ratios=[1.0, 2.0, 4.0] C=6" in trials[1]
    assert "placement=['robust', 'robust', 'accurate']" in trials[2]
    assert "top 2 non-dominated" in lines[5] and "'pgd20_acc': 'max'" in lines[5]
    assert not (tmp_path / "runs").exists()  # validate starts nothing


def test_validate_optuna_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tiny_spec("opt", tmp_path, search_algorithm="optuna", skip_retrain=True, sampler={"num_samples": 4},
                     grid={"placement": ["arnas", "robust-first"], "channel_ratios": [None]})
    rc, out, _ = _validate(write_spec(tmp_path / "spec.yaml", data), capsys)
    assert rc == 0
    assert "4 search trial(s), Optuna NSGA-II" in out and "no retraining" in out


def test_absent_data_root_is_a_warning_not_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The submitting machine need not hold the data: the trials check it on their nodes."""
    data = tiny_spec("far", tmp_path / "runs", dataset={"name": "cifar10", "root": "/nonexistent/cifar"})
    rc, out, err = _validate(write_spec(tmp_path / "spec.yaml", data), capsys)
    assert rc == 0 and "4 search trial(s)" in out
    assert "warning: dataset.root: '/nonexistent/cifar' does not exist on this machine" in err


def test_faults_come_from_the_environment_only(tmp_path: Path) -> None:
    spec = SweepSpec.from_dict(tiny_spec("f", tmp_path))
    faults = Faults.from_env({FAULTS_ENV: f'{{"diverge": ["{GRID_KEYS[1]}"], "raise": ["{GRID_KEYS[2]}"]}}'})
    lrs = {p.key: faults.search_config(p.key, spec.search_config(p)).lr for p in spec.points()}
    assert lrs.pop(GRID_KEYS[1]) == DIVERGE_LR
    assert set(lrs.values()) == {spec.search.lr}
    with pytest.raises(RuntimeError, match="injected fault"):
        faults.check(GRID_KEYS[2])
    faults.check(GRID_KEYS[0])
    assert not Faults.from_env({}) and Faults.from_dict(faults.to_dict()) == faults
    with pytest.raises(ValueError, match=FAULTS_ENV):
        Faults.from_env({FAULTS_ENV: "{not json"})
    paused = Faults.from_env({FAULTS_ENV: '{"pause_s": 2.5}'})
    assert paused and paused.pause_s == 2.5 and Faults.from_dict(paused.to_dict()) == paused
    for bad in ('"soon"', "-1", "true"):
        with pytest.raises(ValueError, match="pause_s"):
            Faults.from_env({FAULTS_ENV: f'{{"pause_s": {bad}}}'})


def test_fingerprint_covers_only_what_defines_the_trials(tmp_path: Path) -> None:
    spec = SweepSpec.from_dict(tiny_spec("fp", tmp_path))
    relaxed = SweepSpec.from_dict(tiny_spec("fp", tmp_path / "elsewhere", resources={"cpu": 2},
                                            max_concurrent=1, max_failures=3, max_failed_fraction=0.5))
    assert relaxed.fingerprint() == spec.fingerprint() and spec.defining_diff(relaxed) == []
    longer = SweepSpec.from_dict(tiny_spec("fp", tmp_path, search={"epochs": 2}))
    assert longer.fingerprint() != spec.fingerprint()
    assert spec.defining_diff(longer) == ["search.epochs"]


def test_spec_round_trips_through_yaml(tmp_path: Path) -> None:
    spec = SweepSpec.from_dict(tiny_spec("rt", tmp_path, evaluation={"objectives": {"pgd20_acc": "max"}}))
    path = tmp_path / "copy.yaml"
    path.write_text(spec.to_yaml())
    again = load_spec(path)
    assert again == spec and again.fingerprint() == spec.fingerprint()
    assert yaml.safe_load(path.read_text())["evaluation"]["objectives"] == {"pgd20_acc": "max"}
