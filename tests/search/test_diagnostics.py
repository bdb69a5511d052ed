"""Search diagnostics on hand-built gradient pairs: gamma at 0, 1 and inside, the descent
check, the per-step records and summaries, the degeneracy rule and the genotype change count."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from arnas_ray._diagnostics import (
    STEP_FIELDS,
    degeneracy_warning,
    edges_changed,
    search_degeneracy,
    step_record,
    summarize_steps,
)
from arnas_ray.search import Architect
from arnas_ray.search.diagnostics import EpochDiagnostics, op_entropy, step_vector
from arnas_ray.search.mgda import mgda_weights
from arnas_ray.space import GENOTYPES
from tests.search.conftest import tiny_batch, tiny_supernet


def _t(*xs: float) -> list[torch.Tensor]:
    """One 'alpha' tensor of shape [1, n] per gradient (the shapes the architect uses)."""
    return [torch.tensor([list(xs)], dtype=torch.float64)]


def _mgda(u_nat, u_adv, normalization="none"):
    w = mgda_weights([u_nat[0].reshape(-1), u_adv[0].reshape(-1)], normalization=normalization)
    gamma = w[0]
    return [gamma * u_nat[0] + (1 - gamma) * u_adv[0]], gamma


def _record(u_nat, u_adv, direction, gamma, alphas=None):
    alphas = alphas if alphas is not None else [torch.zeros(2, 3, dtype=torch.float64)]
    vec = step_vector(u_nat, u_adv, direction, gamma, [torch.tensor(1.0), torch.tensor(0.5)], alphas)
    assert vec.shape == (len(STEP_FIELDS),)
    return step_record(vec.tolist(), epoch=1, step=0)


@pytest.mark.parametrize(("u_nat", "u_adv", "gamma", "cos"), [
    ((1.0, 0.0), (0.0, 1.0), 0.5, 0.0),  # orthogonal, equal length: the midpoint
    ((2.0, 0.0), (1.0, 0.1), 0.0, 2.0 / (2.0 * math.hypot(1.0, 0.1))),  # u_adv is the min-norm point
    ((1.0, 0.1), (2.0, 0.0), 1.0, 2.0 / (2.0 * math.hypot(1.0, 0.1))),  # u_nat is
    ((1.0, 0.0), (-0.5, 1.0), 7 / 13, -0.5 / math.hypot(0.5, 1.0)),  # inside, obtuse
])
def test_mgda_pairs_give_gamma_norms_cosine_and_pass_the_descent_check(u_nat, u_adv, gamma, cos):
    un, ua = _t(*u_nat), _t(*u_adv)
    d, g = _mgda(un, ua)
    rec = _record(un, ua, d, g)
    assert rec["gamma"] == pytest.approx(gamma, abs=1e-12)
    assert rec["norm_nat"] == pytest.approx(math.hypot(*u_nat)) and rec["norm_adv"] == pytest.approx(math.hypot(*u_adv))
    assert rec["cos"] == pytest.approx(cos, abs=1e-12)
    dvec = gamma * torch.tensor(u_nat) + (1 - gamma) * torch.tensor(u_adv)
    assert rec["norm_d"] == pytest.approx(float(dvec.norm()))
    assert rec["dot_nat"] == pytest.approx(float(dvec @ torch.tensor(u_nat)))
    assert rec["dot_adv"] == pytest.approx(float(dvec @ torch.tensor(u_adv)))
    assert rec["descent"] is True  # the min-norm point: d . u_i >= ||d||^2
    assert rec["loss_nat"] == 1.0 and rec["loss_adv"] == 0.5
    assert rec["entropy"] == pytest.approx(math.log(3))  # uniform op weights


def test_descent_check_fails_for_a_weighting_that_ascends_one_objective():
    u_nat, u_adv = _t(1.0, 0.0), _t(-3.0, 0.1)
    fixed = [u_nat[0] + u_adv[0]]  # strategy fixed (1, 1): d = (-2, 0.1), d . u_nat = -2
    rec = _record(u_nat, u_adv, fixed, torch.tensor(0.5, dtype=torch.float64))
    assert rec["dot_nat"] == pytest.approx(-2.0) and rec["descent"] is False
    # l2 normalisation: gamma is 0.5 and the raw midpoint ascends the short objective
    d, g = _mgda(_t(1.0, 0.0), _t(-10.0, 1.0), normalization="l2")
    rec = _record(_t(1.0, 0.0), _t(-10.0, 1.0), d, g)
    assert rec["gamma"] == pytest.approx(0.5, abs=1e-6) and rec["descent"] is False


def test_one_objective_leaves_the_other_unrecorded():
    u_adv = _t(0.0, 2.0)
    rec = _record(None, u_adv, u_adv, torch.tensor(0.0, dtype=torch.float64))
    assert rec["norm_nat"] is None and rec["cos"] is None and rec["dot_nat"] is None
    assert rec["norm_adv"] == pytest.approx(2.0) and rec["dot_adv"] == pytest.approx(4.0)
    assert rec["descent"] is True


def test_architect_step_records_the_diagnostics_of_its_hypergradients():
    model, batch = tiny_supernet(), tiny_batch()
    arch = Architect(model, order="first", strategy="mgda")
    (u_nat, u_adv), losses = Architect(model, order="first").hypergradients(batch, eta=0.1)
    stats = arch.step(batch, eta=0.1)
    assert arch.last_stats is stats and stats.diagnostics is not None
    rec = step_record(stats.diagnostics.tolist(), epoch=1, step=0)
    flat = [torch.cat([g.reshape(-1) for g in u]) for u in (u_nat, u_adv)]
    assert rec["norm_nat"] == pytest.approx(float(flat[0].norm()), rel=1e-9)
    assert rec["norm_adv"] == pytest.approx(float(flat[1].norm()), rel=1e-9)
    assert rec["cos"] == pytest.approx(float(flat[0] @ flat[1] / (flat[0].norm() * flat[1].norm())), rel=1e-9)
    assert rec["gamma"] == pytest.approx(float(stats.gamma)) and rec["norm_d"] == pytest.approx(float(stats.grad_norm))
    assert rec["loss_nat"] == pytest.approx(float(losses[0])) and rec["descent"] is True
    ent = op_entropy(model.arch_parameters())
    assert rec["entropy"] == pytest.approx(ent["entropy_mean"], rel=1e-5)
    off = Architect(tiny_supernet(), order="first", diagnostics=False)
    assert off.step(batch, eta=0.1).diagnostics is None


def test_epoch_collection_and_summaries():
    diag = EpochDiagnostics(epoch=3, strategy="mgda")
    rows = [[0.0, 2.0, 0.2, 1.0, 0.1, 0.1, 0.5, 0.05, 0.01, 1.0],
            [1e-7, 2.0, 0.2, 1.0, 0.1, 0.1, 0.3, 0.03, 0.01, 1.0],
            [0.4, 2.0, 0.2, 1.0, 0.1, 0.1, -0.1, -0.5, 0.01, 1.0]]
    for r in rows:
        diag.add(torch.tensor(r, dtype=torch.float64), torch.tensor(r[0]))
    diag.add(None, torch.tensor(1.0))  # diagnostics off: gamma only
    recs = diag.records()
    assert [(r["epoch"], r["step"], r["strategy"]) for r in recs] == [(3, i, "mgda") for i in range(4)]
    assert [r["descent"] for r in recs] == [True, True, False, None]
    assert recs[3]["norm_nat"] is None and recs[3]["gamma"] == 1.0
    s = summarize_steps(recs)
    assert s["gamma_frac_0"] == 0.5 and s["gamma_frac_1"] == 0.25 and s["gamma_frac_half"] == 0.0
    assert s["gamma_min"] == 0.0 and s["gamma_max"] == 1.0
    assert s["gamma_mean"] == pytest.approx((0.0 + 1e-7 + 0.4 + 1.0) / 4)
    assert s["descent_frac"] == pytest.approx(2 / 3) and s["cos_mean"] == pytest.approx(0.7 / 3)
    assert s["norm_nat_mean"] == 1.0
    empty = summarize_steps([step_record([0.5], epoch=1, step=0)])
    assert math.isnan(empty["cos_mean"]) and math.isnan(empty["descent_frac"]) and empty["gamma_frac_half"] == 1.0


def test_degeneracy_rule():
    assert "only the adversarial objective" in degeneracy_warning(0.9, 0.0)
    assert "only the natural objective" in degeneracy_warning(0.05, 0.95)
    assert degeneracy_warning(0.89, 0.05) is None and degeneracy_warning(0.4, 0.4) is None
    assert degeneracy_warning(float("nan"), float("nan")) is None
    msg = degeneracy_warning(0.0, 0.0, frac_gamma_half=1.0, normalization="l2")
    assert "fixed equal weighting" in msg and "l2" in msg
    assert degeneracy_warning(0.0, 0.0, frac_gamma_half=0.5, normalization="l2") is None
    # mostly-but-not-exactly zero (the default weighting measured on digits: gamma 0.004..0.025)
    assert "almost only the adversarial objective (mean gamma 0.017" in degeneracy_warning(
        0.6, 0.0, gamma_mean=0.017)
    assert "almost only the natural objective" in degeneracy_warning(0.0, 0.5, gamma_mean=0.96)
    assert degeneracy_warning(0.5, 0.0, gamma_mean=0.2) is None
    assert degeneracy_warning(0.5, 0.0, gamma_mean=float("nan")) is None


def test_search_degeneracy_weights_epochs_by_steps_and_skips_the_warm_up():
    def epoch(strategy, steps, f0, f1=0.0, fh=0.0, mean=0.5):
        return {"strategy_used": strategy, "steps": steps, "gamma_frac_0": f0, "gamma_frac_1": f1,
                "gamma_frac_half": fh, "gamma_mean": mean}

    warm = epoch("adversarial", 10, 1.0)
    assert search_degeneracy([warm, epoch("mgda", 10, 0.2)]) is None  # the warm-up's gamma=0 is by design
    assert "adversarial" in search_degeneracy([epoch("mgda", 90, 1.0), epoch("mgda", 10, 0.0)])
    assert search_degeneracy([epoch("mgda", 80, 1.0), epoch("mgda", 20, 0.0)]) is None  # 80%
    assert search_degeneracy([warm]) is None and search_degeneracy([]) is None
    assert "l2" in search_degeneracy([epoch("mgda", 5, 0.0, fh=1.0)], normalization="l2")
    small = [epoch("mgda", 30, 0.6, mean=0.01), epoch("mgda", 10, 0.5, mean=0.05)]  # step-weighted: 0.02
    assert "almost only the adversarial objective (mean gamma 0.020" in search_degeneracy(small)


def test_edges_changed_counts_edges_per_node_regardless_of_their_order():
    g = GENOTYPES["ARNAS"].to_dict()
    assert edges_changed(g, g) == 0
    swapped = {"cells": {t: dict(c) for t, c in g["cells"].items()}}
    e = [list(x) for x in g["cells"]["robust"]["edges"]]
    e[0], e[1] = e[1], e[0]  # same node, other order
    swapped["cells"]["robust"] = {**g["cells"]["robust"], "edges": e}
    assert edges_changed(g, swapped) == 0
    one = [list(x) for x in g["cells"]["accurate"]["edges"]]
    one[2] = ["max_pool_3x3", one[2][1]]
    changed = {"cells": {**g["cells"], "accurate": {**g["cells"]["accurate"], "edges": one}}}
    assert edges_changed(g, changed) == 1 and edges_changed(GENOTYPES["ARNAS"].to_json(), changed) == 1
    assert edges_changed({"cells": {}}, g) == 24  # three cell types of 8 edges, none before


def test_the_plain_data_module_imports_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    import importlib

    import arnas_ray._diagnostics as mod

    importlib.reload(mod)
    assert mod.degeneracy_warning(1.0, 0.0) is not None
