"""evaluate(): ordering checks and masking warnings, transfer attacks, modes, AutoAttack."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from arnas_ray.attacks import AttackSpec
from arnas_ray.data import DataSplits, load_dataset, make_loader
from arnas_ray.errors import SpecError
from arnas_ray.train import EvalResult, evaluate, sanity_warnings


def _cnn(seed: int, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, classes))


def _train(model: nn.Module, data: DataSplits, seed: int, epochs: int = 5) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for epoch in range(epochs):
        for x, y in make_loader(data.train, 32, shuffle=True, seed=seed * 10 + epoch):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return model


@pytest.fixture(scope="module")
def patterns() -> DataSplits:
    return load_dataset("synthetic", image_size=8, num_classes=4, num_train=256, num_test=128,
                        seed=0, augment=False)


@pytest.fixture(scope="module")
def two_models(patterns: DataSplits) -> tuple[nn.Module, nn.Module]:
    """Two independently initialised and trained CNNs (different seeds and data order)."""
    return _train(_cnn(1), patterns, 1), _train(_cnn(2), patterns, 2)


# ---------------------------------------------------------------------------- sanity checks


def test_sanity_accepts_a_consistent_ordering() -> None:
    assert sanity_warnings(n=100, nat_acc=0.9, fgsm_acc=0.6, pgd20_acc=0.5, pgd100_acc=0.49,
                           aa_acc=0.48, transfer_acc=0.7) == []
    # one example of slack: PGD-100 one example above PGD-20 is noise, not masking
    assert sanity_warnings(n=100, pgd20_acc=0.50, pgd100_acc=0.51) == []
    assert sanity_warnings(n=100, pgd100_acc=0.50, aa_acc=0.51) == []  # AA: one point


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(nat_acc=0.5, fgsm_acc=0.6), "FGSM accuracy 0.6000 exceeds natural"),
        (dict(fgsm_acc=0.4, pgd20_acc=0.45), "PGD-20 accuracy 0.4500 exceeds FGSM"),
        (dict(pgd20_acc=0.40, pgd100_acc=0.42), "PGD-100 accuracy 0.4200 exceeds PGD-20"),
        (dict(nat_acc=0.5, pgd100_acc=0.7), "PGD-100 accuracy 0.7000 exceeds natural"),
        (dict(pgd100_acc=0.40, aa_acc=0.42), "AutoAttack accuracy 0.4200"),
        (dict(pgd20_acc=0.40, transfer_acc=0.30), "transfer attack"),
    ],
)
def test_sanity_reports_each_violation(kwargs: dict, words: str) -> None:
    warnings = sanity_warnings(n=100, **kwargs)
    assert len(warnings) == 1
    assert warnings[0].startswith("suspected gradient masking:") and words in warnings[0]


class _ReverseGrad(torch.autograd.Function):
    """Identity forward, negated gradient backward: a model whose gradients lie."""

    @staticmethod
    def forward(ctx, x):  # noqa: ANN001, ANN205
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        return -grad


class _Masked(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(_ReverseGrad.apply(x))


def test_a_gradient_masking_model_is_flagged_not_hidden(patterns: DataSplits) -> None:
    torch.manual_seed(0)
    model = _Masked(_cnn(3))  # untrained: natural accuracy near chance
    res = evaluate(model, patterns.test, "cpu", attacks=("natural", "fgsm", "pgd20"), eps=0.3)
    assert res.fgsm_acc is not None and res.nat_acc is not None
    assert res.fgsm_acc > res.nat_acc + 1 / res.n  # "attacks" that help the model
    assert any(w.startswith("suspected gradient masking: FGSM") for w in res.warnings)


# ---------------------------------------------------------------------------- evaluate


def test_transfer_attack_lies_between_white_box_and_natural(
        patterns: DataSplits, two_models: tuple[nn.Module, nn.Module]) -> None:
    target, source = two_models
    res = evaluate(target, patterns.test, "cpu", attacks=("natural", "pgd20"),
                   transfer_from=source, eps=0.1)
    assert res.nat_acc is not None and res.pgd20_acc is not None
    assert res.transfer_acc is not None
    assert res.nat_acc >= 0.9
    assert res.pgd20_acc < res.transfer_acc < res.nat_acc
    assert res.warnings == []


def test_evaluation_ordering_modes_and_json(patterns: DataSplits,
                                            two_models: tuple[nn.Module, nn.Module]) -> None:
    model = two_models[0].train()
    res = evaluate(model, patterns, "cpu", attacks=("natural", "fgsm", "pgd20", "pgd100"),
                   eps=0.05, limit=64, batch_size=24)
    assert model.training  # mode restored
    assert res.n == 64 and res.aa_acc is None and res.aa_n is None and res.transfer_acc is None
    accs = [res.nat_acc, res.fgsm_acc, res.pgd20_acc, res.pgd100_acc]
    assert all(a is not None for a in accs)
    assert all(a + 1 / 64 >= b for a, b in zip(accs, accs[1:]))
    assert res.warnings == []
    assert res.params == sum(p.numel() for p in model.parameters()) and res.macs > 0
    assert res.alpha == pytest.approx(0.05 / 4)
    assert EvalResult(**json.loads(res.to_json())) == res


def test_same_seed_same_numbers_and_loader_input(patterns: DataSplits,
                                                 two_models: tuple[nn.Module, nn.Module]) -> None:
    model = two_models[0]
    loader = make_loader(patterns.test, 50, shuffle=False)
    a = evaluate(model, loader, "cpu", attacks=("pgd20",), eps=0.1, seed=3)
    b = evaluate(model, patterns.test, "cpu", attacks=("pgd20",), eps=0.1, seed=3,
                 batch_size=50)
    assert a.pgd20_acc == b.pgd20_acc and a.n == b.n == 128 and a.nat_acc is None


def test_unknown_attack_is_refused(patterns: DataSplits) -> None:
    with pytest.raises(SpecError, match="attacks\\[1\\].*'natural', 'fgsm'"):
        evaluate(_cnn(0), patterns.test, "cpu", attacks=("natural", "pgd7"))


def test_autoattack_on_a_subset_is_no_stronger_than_allowed() -> None:
    pytest.importorskip("pyautoattack")
    data = load_dataset("synthetic", image_size=8, num_classes=10, num_train=256, num_test=64,
                        seed=0, augment=False)
    model = _train(_cnn(5, classes=10), data, 5, epochs=3)
    res = evaluate(model, data.test, "cpu", attacks=("natural", "pgd20", "aa"), aa_subset=12,
                   eps=0.05, aa_options={"n_iter": 5, "n_queries": 20})
    assert res.aa_n == 12 and res.n == 64
    assert res.aa_acc is not None and 0.0 <= res.aa_acc <= 1.0
    assert not any("AutoAttack" in w for w in res.warnings)


def test_evaluation_attacks_have_one_home() -> None:
    """The names come from arnas_ray._metrics (torch-free); the suite only adds their specs,
    and each result field is the attack's results-table column."""
    from arnas_ray import _metrics
    from arnas_ray.train import EVAL_ATTACKS, EVAL_SPECS, EvalResult

    assert EVAL_ATTACKS is _metrics.EVAL_ATTACKS and tuple(EVAL_SPECS) == EVAL_ATTACKS
    fields = {f.name for f in dataclasses.fields(EvalResult)}
    assert set(_metrics.ATTACK_COLUMNS.values()) <= fields
    kinds = {name: (EVAL_SPECS[name](0.1, 0.02) or AttackSpec(kind="fgsm")).kind
             for name in EVAL_ATTACKS}
    assert kinds == {"natural": "fgsm", "fgsm": "fgsm", "pgd20": "pgd", "pgd100": "pgd",
                     "aa": "autoattack"}
    assert EVAL_SPECS["pgd100"](0.1, 0.02).steps == 100 and EVAL_SPECS["natural"](0.1, 0.02) is None
