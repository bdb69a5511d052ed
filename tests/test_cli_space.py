"""`arnas-ray genotype` and `arnas-ray supernet` commands (in-process)."""

import json

import pytest

from arnas_ray.cli import main
from arnas_ray.space import GENOTYPES


def _json_line(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_genotype_cost_prints_reference_figures(capsys):
    assert main(["genotype", "cost", "ARNAS", "--layout", "arnas", "--channels", "64", "--cells", "20"]) == 0
    out = _json_line(capsys)
    assert out["params"] == 4_520_394
    assert abs(out["macs"] - 1240e6) / 1240e6 < 0.01


def test_supernet_cost_prints_reference_figures(capsys):
    assert main(["supernet", "cost", "--layout", "arnas", "--channels", "24", "--cells", "8"]) == 0
    out = _json_line(capsys)
    assert out["params"] == 1_882_930
    assert abs(out["macs"] - 461.2e6) / 461.2e6 < 0.01


def test_genotype_show_text_and_json_from_file(tmp_path, capsys):
    assert main(["genotype", "show", "ARNAS"]) == 0
    text = capsys.readouterr().out
    assert "accurate:" in text and "robust:" in text and "dil_conv_5x5(c_{k-2})" in text
    f = tmp_path / "g.json"
    f.write_text(GENOTYPES["DARTS_V2"].to_json())
    assert main(["genotype", "show", str(f), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == GENOTYPES["DARTS_V2"].to_dict()


def test_genotype_show_draws_each_cell(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARNAS_RAY_CELL_BACKEND", "matplotlib")
    assert main(["genotype", "show", "ARNAS", "--out", str(tmp_path), "--format", "svg"]) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 3 and all(f.endswith(".svg") for f in files)
    assert "<svg" in (tmp_path / files[0]).read_text()


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["genotype", "cost", "NOPE"], "unknown genotype"),
        (["genotype", "cost", "ARNAS", "--layout", "nope"], "unknown layout preset"),
        (["genotype", "cost", "ARNAS", "--channels", "0"], "--channels"),
        (["supernet", "cost", "--channel-ratios", "1,x,2"], "--channel-ratios"),
        (["supernet", "cost", "--channel-ratios", "1,2"], "one ratio per stage"),
        (["supernet", "cost", "--primitives", "foo"], "--primitives"),
        (["genotype", "cost", "DARTS_V2", "--layout", "arnas"], "lacks cell type"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
