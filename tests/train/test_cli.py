"""``arnas-ray retrain`` and ``arnas-ray eval`` in-process round trip on a tiny config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arnas_ray.checkpoint import load_checkpoint
from arnas_ray.cli import main

CONFIG = """
channels: 4
cells: 3
batch_size: 16
cutout: 0
val_samples: 16
steps_per_epoch: 2
attack: {steps: 1}
eval_attack: {steps: 2}
"""


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_retrain_then_eval_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "retrain.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "run"
    rc = main(["retrain", "ARNAS", "--dataset", "digits", "--image-size", "8", "--data-limit", "120",
               "--config", str(cfg), "--epochs", "2", "--method", "pgd-at", "--eps", "0.1",
               "--lr", "0.05", "--eval-attacks", "natural,fgsm,pgd20", "--eval-limit", "24",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    res = _last_json(capsys.readouterr().out)
    assert res["n"] == 24 and res["pgd100_acc"] is None and res["eps"] == pytest.approx(0.1)
    assert res["alpha"] == pytest.approx(0.025)  # eps / 4
    assert {p.name for p in out.iterdir()} >= {"best.pt", "checkpoint.pt", "history.jsonl",
                                               "genotype.json", "eval.json"}
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 2 and state["config"]["lr"] == 0.05
    assert state["config"]["attack"]["eps"] == pytest.approx(0.1)
    assert state["config"]["attack"]["steps"] == 1  # from the YAML file
    assert state["config"]["channels"] == 4

    rc = main(["eval", str(out / "best.pt"), "--attacks", "natural,fgsm", "--limit", "20",
               "--transfer-from", str(out / "checkpoint.pt")])
    assert rc == 0
    ev = _last_json(capsys.readouterr().out)
    assert ev["n"] == 20 and ev["aa_acc"] is None and ev["transfer_acc"] is not None
    assert ev["eps"] == pytest.approx(0.1) and ev["params"] == res["params"]


def test_bad_flags_exit_2_naming_the_field(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["retrain", "ARNAS", "--epochs", "0", "--out", str(tmp_path / "x"), "--no-progress"])
    assert rc == 2
    assert "epochs" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.1\nmomentun: 0.9\n")
    rc = main(["retrain", "ARNAS", "--config", str(bad), "--out", str(tmp_path / "y"),
               "--no-progress"])
    assert rc == 2
    assert "momentun" in capsys.readouterr().err
    rc = main(["eval", str(tmp_path / "missing.pt")])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
