"""Every example sweep spec validates (``arnas-ray sweep validate``, no Ray), and the quickstart
and the paper spec say what the README promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from arnas_ray.cli import main
from arnas_ray.sweep import load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: examples whose data set is read from a local root (a placeholder path in the file)
NEEDS_ROOT = {"cifar10_paper.yaml"}
EXPECTED = {"quickstart.yaml", "cifar10_paper.yaml", "ablation_placement.yaml",
            "ablation_channels.yaml", "optuna_channels.yaml"}


def _with_root(src: Path, root: Path, out_dir: Path) -> Path:
    """A copy of ``src`` whose dataset root is ``root`` (validation checks that it exists)."""
    data: dict[str, Any] = yaml.safe_load(src.read_text())
    data["dataset"]["root"] = str(root)
    out = out_dir / src.name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def _example_path(name: str, tmp_path: Path) -> Path:
    path = EXAMPLES / name
    if name in NEEDS_ROOT:
        root = tmp_path / "data"
        root.mkdir()
        return _with_root(path, root, tmp_path)
    return path


def test_the_examples_are_there():
    assert EXPECTED <= {p.name for p in EXAMPLES.glob("*.yaml")}


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_validates(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["sweep", "validate", str(_example_path(name, tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "search trial(s)" in out


def test_paper_example_without_its_data_validates_with_a_warning(capsys: pytest.CaptureFixture[str]):
    # the placeholder root does not exist here: the nodes must have it, this machine need not;
    # validation says so, naming the field, and goes on (the trials check it on their nodes)
    code = main(["sweep", "validate", str(EXAMPLES / "cifar10_paper.yaml")])
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: dataset.root: '/data/cifar10' does not exist on this machine" in err


def test_quickstart_is_the_promised_grid():
    spec = load_spec(EXAMPLES / "quickstart.yaml")
    assert spec.dataset.name == "digits"
    assert spec.search_algorithm == "grid"
    assert list(spec.grid.placement) == ["arnas"]
    assert [list(r) for r in spec.grid.channel_ratios] == [[1, 2, 2]]
    assert list(spec.grid.strategy) == ["mgda", "fixed"]
    assert len(spec.points()) == 2  # one round of trials on 2 cores: the 5-minute budget
    assert spec.resources.cpu == 1 and spec.resources.gpu == 0
    assert spec.selection.mode == "all"  # both searched networks are retrained
    # 80 search steps: the supernets reach >= 0.5 natural accuracy (30 steps left them near
    # chance; 60 left one at 0.476 on an AVX-512 CPU)
    assert spec.search.epochs * spec.search.steps_per_epoch >= 80
    assert not spec.skip_retrain and spec.retrain.method == "pgd-at"
    assert list(spec.evaluation.attacks) == ["natural", "fgsm", "pgd20", "pgd100"]
    # one eps everywhere: search, training and evaluation (the sweep evaluates at retrain.attack.eps)
    eps = {spec.search.attack.eps, spec.retrain.attack.eps, spec.retrain.eval_attack.eps}
    assert len(eps) == 1


def test_paper_example_has_the_paper_settings(tmp_path: Path):
    spec = load_spec(_with_root(EXAMPLES / "cifar10_paper.yaml", tmp_path, tmp_path))
    s, r = spec.search, spec.retrain
    assert (s.channels, s.cells, s.epochs, s.batch_size, s.order) == (24, 8, 50, 32, "second")
    assert s.attack.steps == 7 and s.attack.eps == pytest.approx(8 / 255)
    assert s.attack.alpha == pytest.approx(2 / 255) and s.adv_coef == pytest.approx(0.1)
    assert spec.resources.gpu == pytest.approx(0.25)
    assert (r.channels, r.cells, r.epochs, r.batch_size) == (64, 20, 200, 32)
    assert r.lr == pytest.approx(0.1) and r.weight_decay == pytest.approx(1e-4)
    assert r.attack.eps == pytest.approx(8 / 255) and r.attack.alpha == pytest.approx(0.01)
    assert list(r.milestones) == [0.5, 0.75] and r.cutout == 16
    assert "aa" in spec.evaluation.attacks


def _sharing_pattern(cell_types: tuple[str, ...]) -> tuple[int, ...]:
    """Which stages share a cell type, names dropped: (accurate, accurate, robust) -> (0, 0, 1)."""
    first: dict[str, int] = {}
    return tuple(first.setdefault(t, len(first)) for t in cell_types)


def test_sharing_pattern():
    assert _sharing_pattern(("accurate", "accurate", "robust")) == (0, 0, 1)
    assert _sharing_pattern(("robust", "robust", "accurate")) == (0, 0, 1)
    assert _sharing_pattern(("accurate", "robust", "accurate")) == (0, 1, 0)


def test_ablation_examples_average_over_seeds():
    for name in ("ablation_placement.yaml", "ablation_channels.yaml"):
        spec = load_spec(EXAMPLES / name)
        assert len(spec.grid.seed) >= 2, name
        # ablations compare trained networks (not supernets) and random networks of the space
        assert spec.selection.mode == "all" and spec.baselines.random >= 1, name
    channels = load_spec(EXAMPLES / "ablation_channels.yaml")
    assert list(channels.grid.placement) == ["arnas"] and channels.grid.equal_width
    assert len(channels.grid.channel_ratios) >= 3
    assert load_spec(EXAMPLES / "optuna_channels.yaml").search_algorithm == "optuna"


def test_placement_ablation_compares_distinct_searches():
    # a search from scratch sees only which stages share a cell type: two placements with the
    # same sharing pattern (arnas, robust-first) are the same search with the names swapped
    spec = load_spec(EXAMPLES / "ablation_placement.yaml")
    assert len(spec.grid.channel_ratios) == 1
    assert set(spec.grid.strategy) == {"mgda", "fixed"}
    patterns = [_sharing_pattern(spec.search_config(p).layout().placement)
                for p in spec.points() if p.strategy == "mgda" and p.seed == spec.grid.seed[0]]
    assert len(patterns) == len(spec.grid.placement) >= 4
    assert len(set(patterns)) == len(patterns), patterns


FIDELITY = sorted((EXAMPLES / "fidelity").glob("*.yaml"))


@pytest.mark.parametrize("path", FIDELITY, ids=lambda p: p.name)
def test_fidelity_specs_are_the_study_design(path: Path, capsys: pytest.CaptureFixture[str]):
    """docs/fidelity.md's design: >= 3 seeds per arm, every searched network retrained, the
    shared search of the study (only the order of its hypergradient differs between sweeps)."""
    assert main(["sweep", "validate", str(path)]) == 0
    assert "search trial(s)" in capsys.readouterr().out
    spec = load_spec(path)
    assert len(spec.grid.seed) >= 3 and spec.selection.mode == "all"
    assert spec.name == f"fidelity-{path.stem}"
    assert (spec.search.epochs, spec.search.steps_per_epoch, spec.search.channels) == (3, 20, 8)
    assert spec.search.order == {"order": "second", "exact": "exact"}.get(path.stem, "first")
    assert (spec.baselines.random >= 3) == (path.stem == "strategy")
