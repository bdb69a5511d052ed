"""``arnas-ray search`` in-process: outputs, resume, and one-line errors with exit status 2."""

from __future__ import annotations

import json

import pytest

from arnas_ray.cli import main
from arnas_ray.space import Genotype


@pytest.fixture
def tiny_args(tmp_path):
    cfg = tmp_path / "search.yaml"
    cfg.write_text("attack: {steps: 1}\neval_attack_steps: 1\norder: first\n")
    return ["search", "--dataset", "synthetic", "--image-size", "8", "--data-limit", "40",
            "--layout", "arnas", "--strategy", "mgda", "--channels", "4", "--cells", "4",
            "--batch-size", "4", "--steps-per-epoch", "1", "--eval-samples", "4", "--seed", "1",
            "--config", str(cfg), "--device", "cpu", "--no-progress"]


def test_search_writes_its_outputs_and_resumes(tiny_args, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*tiny_args, "--epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "accurate:" in printed and "robust:" in printed and "natural" in printed
    genotype = Genotype.from_json((out / "genotype.json").read_text())
    lines = (out / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]
    result = json.loads((out / "result.json").read_text())
    assert Genotype.from_dict(result["genotype"]) == genotype
    assert result["dataset"] == "synthetic" and result["config"]["order"] == "first"
    assert (out / "search.pt").is_file()
    # the same command again: the finished run is resumed, nothing is recomputed
    assert main([*tiny_args, "--epochs", "1", "--out", str(out)]) == 0
    assert (out / "history.jsonl").read_text().splitlines() == lines
    # another epoch count is another config: refused with one line, exit 2
    assert main([*tiny_args, "--epochs", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "epochs" in err


@pytest.mark.parametrize(("flags", "needle"), [
    (["--strategy", "pareto"], "strategy"),
    (["--order", "third"], "order"),
    (["--epochs", "0"], "epochs"),
    (["--channels", "5"], "channels"),
    (["--layout", "sideways"], "sideways"),
    (["--dataset", "mnist-9"], "mnist-9"),
])
def test_bad_flags_give_one_line_and_exit_2(tiny_args, tmp_path, capsys, flags, needle):
    code = main([*tiny_args, "--epochs", "1", "--out", str(tmp_path / "bad"), *flags])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("arnas-ray: error:") and needle in err
    assert not (tmp_path / "bad" / "search.pt").exists()


def test_missing_config_file_is_a_one_line_error(tiny_args, tmp_path, capsys):
    args = [a if not a.endswith("search.yaml") else str(tmp_path / "nope.yaml") for a in tiny_args]
    assert main([*args, "--epochs", "1", "--out", str(tmp_path / "x")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
