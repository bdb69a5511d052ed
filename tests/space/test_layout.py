import pytest

from arnas_ray.errors import SpecError
from arnas_ray.space import LAYOUT_PRESETS, Layout


def test_arnas_plan_matches_reference_rule():
    plan = Layout.preset("arnas").plan(cells=8, C=24)
    assert [p.cell_type for p in plan] == ["accurate"] * 2 + ["reduce"] + ["accurate"] * 2 + ["reduce"] + ["robust"] * 2
    assert [p.width for p in plan] == [24, 24, 48, 48, 48, 48, 48, 48]  # C : 2C : 2C
    final = Layout.preset("arnas").plan(cells=20, C=64)
    counts = {t: sum(p.cell_type == t for p in final) for t in ("accurate", "reduce", "robust")}
    assert counts == {"accurate": 12, "reduce": 2, "robust": 6}


def test_darts_widths_double_twice():
    plan = Layout.preset("darts").plan(cells=8, C=16)
    assert sorted({p.width for p in plan}) == [16, 32, 64]
    assert Layout.preset("darts").cell_types == ("normal", "reduce")
    assert Layout.preset("arnas").cell_types == ("accurate", "robust", "reduce")


def test_presets_and_ablation_placements():
    assert Layout.preset("robust-first").placement == ("robust", "robust", "accurate")
    assert set(LAYOUT_PRESETS) >= {"arnas", "darts", "robust-first", "all-accurate", "all-robust", "alternate"}


def test_explicit_layout_from_dict_and_ratio_override():
    lay = Layout.from_spec({"placement": ["accurate", "robust", "robust"], "channel_ratios": [1, 2, 3]})
    assert lay.placement == ("accurate", "robust", "robust") and lay.ratios == (1, 2, 3)
    assert Layout.from_spec("arnas", channel_ratios=[1, 2, 4]).ratios == (1, 2, 4)
    assert Layout.from_spec({"placement": "robust-first", "channel_ratios": [1, 1, 1]}).placement[0] == "robust"


def test_equal_width_budget_rescaling():
    wide = Layout.from_spec("arnas", channel_ratios=[1, 2, 4])
    C = wide.rescaled_C(8, "arnas")  # 8*(1+2+2)=40 -> 40/7 ~ 5.7 -> 6 (even)
    assert C == 6
    assert Layout.preset("arnas").rescaled_C(8, "arnas") == 8
    assert Layout.preset("darts").rescaled_C(36, "darts") == 36


@pytest.mark.parametrize(
    "spec,field",
    [
        ("nope", "placement"),
        ({"placement": ["accurate", "robust"], "channel_ratios": [1, 2, 2]}, "channel_ratios"),
        ({"placement": ["accurate"], "channel_ratios": [0]}, "channel_ratios[0]"),
        ({"placement": ["accurate"], "channel_ratios": [-1]}, "channel_ratios[0]"),
        ({"placement": ["Bad Name"], "channel_ratios": [1]}, "placement[0]"),
        ({"placement": ["reduce"], "channel_ratios": [1]}, "placement[0]"),
        ({"placement": ["accurate"], "channel_ratios": ["x"]}, "channel_ratios[0]"),
        ({"placement": [], "channel_ratios": []}, "placement"),
        ({"channel_ratios": [1]}, "placement"),
        ({"placement": "arnas", "bogus": 1}, "bogus"),
        (12, "placement"),
    ],
)
def test_bad_layouts_name_the_field(spec, field):
    with pytest.raises(SpecError) as exc:
        Layout.from_spec(spec)
    assert exc.value.field == field


def test_too_few_cells_is_an_error():
    with pytest.raises(SpecError, match="cells"):
        Layout.preset("arnas").plan(cells=2, C=8)
