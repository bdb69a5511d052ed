"""Training objectives: real TRADES (KL on the adversarial input), PGD-AT, mode handling."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from arnas_ray.attacks import AttackSpec
from arnas_ray.errors import SpecError
from arnas_ray.space import GENOTYPES, Layout, Network
from arnas_ray.train import METHODS, natural_loss, pgd_at_loss, trades_loss
from arnas_ray.train.losses import LOSSES, LossSpec, training_loss

SPEC = AttackSpec(kind="pgd", eps=0.1, alpha=0.03, steps=3)
LOSS = LossSpec(attack=SPEC, trades_beta=6.0)


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4))


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(8, 3, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)


def test_trades_kl_term_is_positive_and_uses_the_adversarial_input() -> None:
    model = _cnn().train()
    x, y = _batch()
    out = trades_loss(model, x, y, LOSS, generator=_gen())
    kl = out.parts["robust"]
    assert kl.item() > 1e-4  # the reference's natural-vs-natural KL is identically 0
    assert out.x_adv is not None
    delta = (out.x_adv - x).abs()
    assert delta.max().item() <= SPEC.eps + 1e-6 and delta.max().item() > 0.01
    # Recompute the term from x_adv: KL(softmax f(x) || softmax f(x_adv)), batchmean.
    with torch.no_grad():
        p_nat = F.softmax(model(x), dim=1)
        expected = F.kl_div(F.log_softmax(model(out.x_adv), dim=1), p_nat, reduction="batchmean")
        natural_vs_natural = F.kl_div(F.log_softmax(model(x), dim=1), p_nat,
                                      reduction="batchmean")
    assert kl.item() == pytest.approx(expected.item(), rel=1e-4)
    assert natural_vs_natural.abs().item() < 1e-6
    ce = F.cross_entropy(model(x), y)
    assert out.loss.item() == pytest.approx(ce.item() + 6.0 * kl.item(), rel=1e-4)


def test_trades_inner_maximisation_increases_the_kl() -> None:
    model = _cnn().train()
    x, y = _batch()
    no_steps = AttackSpec(kind="pgd", eps=0.1, alpha=0.03, steps=0)
    start = trades_loss(model, x, y, LossSpec(attack=no_steps), generator=_gen())
    crafted = trades_loss(model, x, y, LOSS, generator=_gen())
    assert crafted.parts["robust"].item() > 10 * start.parts["robust"].item()


def test_trades_gradient_flows_through_the_kl_branch() -> None:
    model = _cnn().train()
    x, y = _batch()
    out = trades_loss(model, x, y, LOSS, generator=_gen())
    grads_full = torch.autograd.grad(out.loss, list(model.parameters()), retain_graph=True)
    grads_ce = torch.autograd.grad(F.cross_entropy(out.logits, y), list(model.parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(grads_full, grads_ce))


@pytest.mark.parametrize("craft_mode", ["eval", "train"])
def test_losses_restore_the_mode_and_keep_param_grads_clean(craft_mode: str) -> None:
    model = _cnn().train()
    x, y = _batch()
    seen: list[bool] = []
    hook = model[0].register_forward_hook(lambda m, i, o: seen.append(m.training))
    out = pgd_at_loss(model, x, y, LossSpec(attack=SPEC, craft_mode=craft_mode),
                      generator=_gen())
    hook.remove()
    assert model.training
    assert all(p.grad is None for p in model.parameters())  # crafting asks for input grads only
    assert seen[: SPEC.steps] == [craft_mode == "train"] * SPEC.steps
    assert seen[-1] is True  # the update's forward pass runs in train mode
    assert out.x_adv is not None and (out.x_adv - x).abs().max() <= SPEC.eps + 1e-6
    ce_adv = F.cross_entropy(model(out.x_adv), y)
    assert out.parts["robust"].item() == pytest.approx(ce_adv.item(), rel=1e-3)


def test_pgd_at_loss_exceeds_natural_loss_and_uses_auxiliary_head() -> None:
    torch.manual_seed(0)
    net = Network(GENOTYPES["ARNAS"], Layout.preset("arnas"), 4, 4, 3, auxiliary=True).train()
    x, y = _batch()
    nat = natural_loss(net, x, y)
    adv = pgd_at_loss(net, x, y, LossSpec(attack=SPEC, auxiliary_weight=0.4), generator=_gen())
    assert "auxiliary" in adv.parts and "auxiliary" not in nat.parts
    robust = adv.parts["robust"].item()
    assert adv.loss.item() == pytest.approx(robust + 0.4 * adv.parts["auxiliary"].item(), rel=1e-5)
    assert robust > nat.loss.item()


def test_training_loss_refuses_unknown_method() -> None:
    model = _cnn()
    x, y = _batch()
    with pytest.raises(ValueError, match="'pgd-at', 'trades', 'natural'"):
        training_loss("madry", model, x, y, LOSS)


def test_methods_are_the_loss_registry_and_share_one_signature() -> None:
    assert METHODS == tuple(LOSSES) == ("pgd-at", "trades", "natural")
    model = _cnn().train()
    x, y = _batch()
    for method in METHODS:  # the same call works for every objective
        # copies: a train-mode forward moves the BN running statistics eval-mode crafting reads
        out = training_loss(method, copy.deepcopy(model), x, y, LOSS, generator=_gen())
        direct = LOSSES[method](copy.deepcopy(model), x, y, LOSS, generator=_gen())
        assert out.loss.item() == pytest.approx(direct.loss.item(), rel=1e-5)
        assert (out.x_adv is None) == (method == "natural")


def test_trades_beta_weights_the_kl_term() -> None:
    model = _cnn().train()
    x, y = _batch()
    zero = trades_loss(model, x, y, LossSpec(attack=SPEC, trades_beta=0.0), generator=_gen())
    two = trades_loss(model, x, y, LossSpec(attack=SPEC, trades_beta=2.0), generator=_gen())
    assert zero.loss.item() == pytest.approx(zero.parts["natural"].item(), rel=1e-6)
    assert two.loss.item() == pytest.approx(
        two.parts["natural"].item() + 2.0 * two.parts["robust"].item(), rel=1e-5)


@pytest.mark.parametrize(("changes", "field"), [({"craft_mode": "test"}, "craft_mode"),
                                                ({"trades_beta": -1.0}, "trades_beta"),
                                                ({"auxiliary_weight": float("nan")},
                                                 "auxiliary_weight")])
def test_loss_spec_is_validated(changes: dict, field: str) -> None:
    with pytest.raises(SpecError) as info:
        LossSpec(**changes)
    assert info.value.field == field
