"""The HTML report, run summaries and the notebook helpers, on tiny fake run directories."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from arnas_ray.results import (
    Run,
    ablation_table,
    front_table,
    hypervolume,
    load_run,
    params_vs_robustness,
    summarize_run,
    write_report,
)
from arnas_ray.results.table import CorruptTableError

from ._fakes import SPEC_TEXT, fake_rows, make_run, row


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.pre: list[str] = []
        self._in_pre = False
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "pre":
            self._in_pre = True
        if tag not in ("img", "meta", "br"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._in_pre = False
        assert self.open and self.open[-1] == tag, (self.open[-5:], tag)
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_pre:
            self.pre.append(data)


def _parse(path: Path) -> _Collector:
    parser = _Collector()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.open == [], parser.open  # every element closed
    return parser


def test_report_is_self_contained_and_complete(run_dir: Path) -> None:
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    document = path.read_text(encoding="utf-8")
    parsed = _parse(path)
    text = "".join(parsed.text)
    # Every trial of the table, escaped (one trial id contains "<script>").
    for trial_id in (r["trial_id"] for r in fake_rows()):
        assert trial_id in text, trial_id
    assert "DivergenceError: loss is nan <&>" in text
    assert not any(tag == "script" for tag, _ in parsed.tags)
    # No network reference at all.
    assert "http://" not in document and "https://" not in document
    for tag, attrs in parsed.tags:
        for name in ("src", "href"):
            value = attrs.get(name)
            assert value is None or value.startswith("data:"), (tag, name, value[:40])
    assert not any(tag in ("link", "iframe", "object") for tag, _ in parsed.tags)
    # Plots and cells are embedded as PNG data URIs that decode to PNG files.
    images = [attrs["src"] for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) >= 2 + 3  # two Pareto plots + the cells of at least one genotype
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    alts = [attrs.get("alt") for tag, attrs in parsed.tags if tag == "img"]
    assert "r1 robust cell" in alts and "r0 accurate cell" in alts
    # The spec verbatim, the cost and pareto.png next to the report.
    assert SPEC_TEXT in "".join(parsed.pre)
    assert "node-2" in text and "cuda:0" in text and "Total wall time" in text
    assert (run_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "pareto_search.png").is_file()


def test_report_shows_computed_or_stored_hypervolume(tmp_path: Path) -> None:
    run = make_run(tmp_path / "computed")
    expected = hypervolume([[0.86, 0.50], [0.80, 0.53]], ("max", "max"))
    assert f"{expected:.6f}" in write_report(run).read_text()
    stored = make_run(tmp_path / "stored", summary={"hypervolume": {"retrain": 0.123456}})
    document = write_report(stored).read_text()
    assert "0.123456" in document and f"{expected:.6f}" not in document


def test_summarize_run(run_dir: Path) -> None:
    summary = summarize_run(run_dir)
    json.dumps(summary)  # JSON-serializable
    assert summary["sweep_id"] == "sw-test" and summary["trials"] == 7
    search, retrain = summary["stages"]["search"], summary["stages"]["retrain"]
    assert search["status"] == {"finished": 3, "failed": 1}
    assert sorted(search["front"]) == ["s0", "s1"]
    assert retrain["front"] == ["r0", "r1"]  # best natural accuracy first
    assert retrain["best"]["trial_id"] == "r0" and retrain["best"]["params"] == 1_533_718
    assert search["hypervolume"] == pytest.approx(
        hypervolume([[0.82, 0.41], [0.78, 0.47], [0.70, 0.30]], ("max", "max")))
    assert summary["wall_s"] == pytest.approx(61.5 + 58 + 55 + 3 + 600 + 500)
    assert summary["devices"] == {"cpu": 5, "cuda:0": 1, "unknown": 1}


def test_load_run_and_front_table(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert isinstance(run, Run)
    assert run.spec["name"] == "sw-test" and run.spec_text == SPEC_TEXT
    assert run.summary == {}
    assert set(run.stage("retrain")["trial_id"]) == {"r0", "r1", "r2"}
    front = front_table(run.table, "search")
    assert list(front["trial_id"]) == ["s0", "s1"]
    with_params = front_table(run.table, "search", {"nat_acc": "max", "params": "min"})
    assert set(with_params["trial_id"]) == {"s0", "s1"}
    with pytest.raises(ValueError, match="unknown stage 'train'"):
        front_table(run.table, "train")


def test_report_without_retrain_rows_or_spec(tmp_path: Path) -> None:
    rows = [r for r in fake_rows() if r["stage"] == "search"]
    run = make_run(tmp_path / "run", rows=rows)
    (run / "spec.yaml").unlink()
    parsed = _parse(write_report(run))
    assert "(no spec.yaml)" in "".join(parsed.text)
    assert (run / "pareto.png").read_bytes() == (run / "pareto_search.png").read_bytes()


def test_report_on_corrupt_table_names_the_file(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    (run / "results.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(CorruptTableError, match=re.escape(str(run / "results.parquet"))):
        write_report(run)


def _ablation_rows() -> pd.DataFrame:
    from arnas_ray.results.table import normalize_rows

    rows = []
    for placement, base in (("arnas", 0.8), ("all-robust", 0.7)):
        for seed, delta in enumerate((-0.02, 0.0, 0.02)):
            rows.append(row("retrain", f"{placement}-{seed}", placement=placement,
                            channel_ratios=[1, 2, 2], seed=seed, nat_acc=base + delta,
                            pgd20_acc=base / 2 + delta, params=1000 * (seed + 1)))
    rows.append(row("retrain", "failed", status="failed", placement="arnas",
                    channel_ratios=[1, 2, 2], seed=9, nat_acc=0.0, pgd20_acc=0.0))
    rows.append(row("search", "s", placement="arnas", channel_ratios=[1, 2, 2], nat_acc=0.1))
    return normalize_rows(rows)


def test_ablation_table_mean_and_std_over_seeds() -> None:
    table = ablation_table(_ablation_rows())
    assert list(table.index) == [("all-robust", "[1, 2, 2]"), ("arnas", "[1, 2, 2]")]
    arnas = table.loc[("arnas", "[1, 2, 2]")]
    assert arnas[("nat_acc", "mean")] == pytest.approx(0.8)
    assert arnas[("nat_acc", "std")] == pytest.approx(0.02)  # sample std of -0.02, 0, 0.02
    assert arnas[("nat_acc", "n")] == 3  # failed and search rows excluded
    assert arnas[("pgd20_acc", "mean")] == pytest.approx(0.4)


def test_params_vs_robustness() -> None:
    out = params_vs_robustness(_ablation_rows())
    assert list(out["params"]) == sorted(out["params"])
    assert len(out) == 6
    front = out[out["front"]]
    # Fewest params with the best PGD-20 at each size: seeds 0, 1, 2 of "arnas".
    assert set(front["trial_id"]) == {"arnas-0", "arnas-1", "arnas-2"}
    np.testing.assert_allclose(out["robust_per_mparam"], out["pgd20_acc"] / (out["params"] / 1e6))


def test_report_shows_degenerate_searches_and_their_steps(tmp_path: Path) -> None:
    """A search trial flagged degenerate is named in a warning, and the per-step records in the
    trials' latest checkpoints (tune/search/TRIAL/checkpoint_N/steps.jsonl) are plotted."""
    rows = fake_rows()
    rows[0] = {**rows[0], "degeneracy": "followed only the adversarial objective (gamma = 0 at 95% of the MGDA steps)",
               "gamma_mean": 0.01, "gamma_frac_0": 0.95}
    run = make_run(tmp_path / "run", rows=rows)
    for index, gamma in ((0, 0.9), (1, 0.0)):  # an older checkpoint, then the latest one
        ckpt = run / "tune" / "search" / "abc_00000_s0" / f"checkpoint_{index:06d}"
        ckpt.mkdir(parents=True)
        (ckpt / "steps.jsonl").write_text("".join(
            json.dumps({"epoch": 1, "step": s, "gamma": gamma, "entropy": 1.9 - 0.01 * s}) + "\n" for s in range(5)))
    from arnas_ray.results.run import search_steps

    steps = search_steps(load_run(run))
    assert list(steps) == ["s0"] and [r["gamma"] for r in steps["s0"]] == [0.0] * 5  # the latest checkpoint
    parsed = _parse(write_report(run))
    text = "".join(parsed.text)
    assert "1 search trial(s) did not weigh both objectives" in text and "followed only the adversarial" in text
    alts = [a.get("alt") for tag, a in parsed.tags if tag == "img"]
    assert "gamma and op-weight entropy per step" in alts
    assert (run / "search_diagnostics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    clean = make_run(tmp_path / "clean")
    assert "No search trial was degenerate." in "".join(_parse(write_report(clean)).text)
