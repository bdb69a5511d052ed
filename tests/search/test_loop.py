"""run_search end to end on a tiny synthetic data set: metrics, resume exactness, divergence."""

from __future__ import annotations

import json
import math

import pytest
import torch

from arnas_ray.checkpoint import load_checkpoint
from arnas_ray.errors import CheckpointError, DivergenceError
from arnas_ray.search import SearchConfig, run_search
from arnas_ray.search.loop import CHECKPOINT_NAME
from arnas_ray.space import Genotype

from .conftest import loop_config


def _config(**kw) -> SearchConfig:
    return loop_config(**kw)


class _Stop(Exception):
    pass


def test_callback_gets_the_epoch_metrics(data, monkeypatch):
    import arnas_ray.search.loop as loop

    seen = []
    real = loop.supernet_accuracy

    def spy(model, dataset, *args, **kw):
        seen.append(dataset)
        return real(model, dataset, *args, **kw)

    monkeypatch.setattr(loop, "supernet_accuracy", spy)
    records, steps = [], []
    result = run_search(_config(epochs=1), data, "cpu", callback=records.append,
                        on_step=lambda *a: steps.append(a))
    assert seen == [data.val]  # accuracies on the held-out split only
    assert steps == [(1, 0, 2), (1, 1, 2)]
    assert len(records) == 1
    rec = records[0]
    assert rec["epoch"] == 1
    for key in ("nat_acc", "pgd_acc", "gamma_mean", "gamma_last"):
        assert 0.0 <= rec[key] <= 1.0, key
    assert rec["pgd_acc"] <= rec["nat_acc"] + 0.5  # an attack, on the held-out split
    for ctype in ("accurate", "reduce", "robust"):
        assert 0.0 < rec[f"entropy_{ctype}"] <= math.log(7) + 1e-6
    assert rec["epoch_s"] > 0 and rec["images_per_s"] > 0 and rec["steps"] == 2
    genotype = Genotype.from_json(rec["genotype"])
    assert genotype == result.genotype
    json.dumps(rec)  # plain JSON values only
    assert result.history == records and result.epochs == 1
    assert result.params > 0 and result.macs > 0
    assert result.nat_acc == rec["nat_acc"] and result.pgd_acc == rec["pgd_acc"]
    assert set(result.alphas) == {"accurate", "reduce", "robust"}


def test_resume_reproduces_the_uninterrupted_run(data, tmp_path):
    config = _config(order="second", steps_per_epoch=1)
    full = run_search(config, data, "cpu", checkpoint_dir=tmp_path / "a")

    def stop_after_first(rec):
        if rec["epoch"] == 1:
            raise _Stop

    with pytest.raises(_Stop):
        run_search(config, data, "cpu", callback=stop_after_first, checkpoint_dir=tmp_path / "b")
    assert int(load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["epoch"]) == 0
    resumed = run_search(config, data, "cpu", checkpoint_dir=tmp_path / "b")
    assert resumed.alphas == full.alphas
    state_a = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)["model"]
    state_b = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["model"]
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        assert torch.equal(state_a[k], state_b[k]), k
    assert [h["gamma_mean"] for h in resumed.history] == [h["gamma_mean"] for h in full.history]
    # a finished run resumes to the same result without another step
    again = run_search(config, data, "cpu", checkpoint_dir=tmp_path / "b")
    assert again.alphas == full.alphas and again.history == resumed.history


def test_checkpoint_of_another_config_is_refused(data, tmp_path):
    run_search(_config(epochs=1), data, "cpu", checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="strategy"):
        run_search(_config(epochs=1, strategy="natural"), data, "cpu", checkpoint_dir=tmp_path)


@pytest.mark.parametrize("group", ["weights", "alphas"])
def test_divergence_names_epoch_and_step_and_keeps_the_last_checkpoint(data, tmp_path, group,
                                                                        monkeypatch):
    import arnas_ray.search.loop as loop

    config = _config(epochs=3, order="first")
    real_step = loop.Architect.step
    calls = {"n": 0}

    def step(self, batch, **kw):
        # epoch 1 runs normally; from epoch 2 on a learning rate is infinite
        calls["n"] += 1
        if calls["n"] > config.steps_per_epoch:
            opt = kw["w_optimizer"] if group == "weights" else self.optimizer
            for g in opt.param_groups:
                g["lr"] = float("inf")
        return real_step(self, batch, **kw)

    monkeypatch.setattr(loop.Architect, "step", step)
    with pytest.raises(DivergenceError, match=r"epoch 2, step \d") as info:
        run_search(config, data, "cpu", checkpoint_dir=tmp_path)
    assert info.value.epoch == 2 and 0 <= info.value.step < config.steps_per_epoch
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert int(state["epoch"]) == 0  # epoch 1's checkpoint, still loadable and finite
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())


def test_non_finite_loss_from_the_start(data, monkeypatch):
    import torch.nn.functional as F

    import arnas_ray.search.loop as loop

    real = F.cross_entropy
    monkeypatch.setattr(loop.F, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(DivergenceError, match=r"epoch 1, step 0") as info:
        run_search(_config(epochs=1, order="first"), data, "cpu")
    assert (info.value.epoch, info.value.step) == (1, 0)


@pytest.mark.parametrize("order", ["first", "second"])
def test_paired_attacks_give_the_same_search(data, order, monkeypatch):
    """Both PGD attacks of a step in one grouped pass per PGD step: same alphas and gammas."""
    from arnas_ray.space import Supernet

    calls = []
    original = Supernet.forward_groups
    monkeypatch.setattr(Supernet, "forward_groups", lambda self, xs: calls.append(len(xs)) or original(self, xs))
    paired = run_search(_config(order=order, pair_attacks=True, channels_last=False), data)
    assert calls and set(calls) == {2}
    # 2 epochs x 2 steps x 2 PGD steps, and in second order per step the stacked passes of the
    # architecture step (Architect.stack_passes): the validation pass and the finite-difference
    # pass of each objective
    assert len(calls) == 8 + (4 * 3 if order == "second" else 0)
    separate = run_search(_config(order=order, pair_attacks=False, channels_last=False), data)
    for t, rows in paired.alphas.items():
        assert torch.allclose(torch.tensor(rows), torch.tensor(separate.alphas[t]), rtol=1e-4, atol=1e-6), t
    for h1, h2 in zip(paired.history, separate.history):
        assert h1["gamma_last"] == pytest.approx(h2["gamma_last"], abs=1e-4)
        assert h1["train_loss"] == pytest.approx(h2["train_loss"], rel=1e-4)


def test_foreach_weight_step_is_bit_identical(data, monkeypatch):
    """The weight optimiser runs with ``foreach=True`` (one call per operation for all tensors):
    a whole search gives exactly the alphas and the weights of the per-tensor loop."""
    import arnas_ray.search.loop as loop

    real = torch.optim.SGD
    made = []

    def sgd(*args, **kw):
        made.append(kw.get("foreach"))
        return real(*args, **{**kw, "foreach": foreach})

    results = {}
    monkeypatch.setattr(loop.torch.optim, "SGD", sgd)
    for foreach in (True, False):
        results[foreach] = run_search(_config(epochs=1), data)
    assert made == [True, True]  # the search asks for it
    for t, rows in results[True].alphas.items():
        assert torch.equal(torch.tensor(rows), torch.tensor(results[False].alphas[t])), t
    assert results[True].history[0]["train_loss"] == results[False].history[0]["train_loss"]
