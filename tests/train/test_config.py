"""RetrainConfig: paper defaults, validation errors that name the field, YAML round trip."""

from __future__ import annotations

import pytest
import yaml

from arnas_ray._config import from_dict, to_dict
from arnas_ray.attacks import AttackSpec
from arnas_ray.errors import SpecError
from arnas_ray.train import RetrainConfig, learning_rate


def test_defaults_are_the_paper_recipe() -> None:
    cfg = RetrainConfig()
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.grad_clip) == (0.1, 0.9, 1e-4, 5.0)
    assert (cfg.epochs, cfg.batch_size, cfg.cutout, cfg.auxiliary_weight) == (200, 32, 16, 0.4)
    assert cfg.milestones == (0.5, 0.75) and cfg.schedule == "step"
    assert cfg.attack == AttackSpec(kind="pgd", eps=8 / 255, alpha=2 / 255, steps=7)
    assert cfg.eval_attack.steps == 20 and cfg.method == "pgd-at"
    assert cfg.layout().ratios == (1, 2, 2)


@pytest.mark.parametrize(
    ("mapping", "field", "words"),
    [
        ({"epochs": 0}, "epochs", "epochs >= 1"),
        ({"lr": -0.1}, "lr", "0 < lr"),
        ({"momentum": 1.0}, "momentum", "momentum < 1"),
        ({"method": "madry"}, "method", "'pgd-at', 'trades', 'natural'"),
        ({"schedule": "linear"}, "schedule", "'step', 'cosine'"),
        ({"milestones": [0.75, 0.5]}, "milestones", "sorted"),
        ({"milestones": [0.5, 1.5]}, "milestones[1]", "0 < milestone < 1"),
        ({"attack": {"eps": -1}}, "attack.eps", "eps=-1.0"),
        ({"attack": {"kind": "autoattack"}}, "attack.kind", "'pgd', 'fgsm'"),
        ({"eval_attack": {"stepz": 3}}, "eval_attack.stepz", "unknown field"),
        ({"placement": "nope"}, "placement", "valid"),
        ({"placement": ["accurate", "robust"]}, "channel_ratios", "required"),
        ({"channel_ratios": [1, 2]}, "channel_ratios", "one ratio per stage"),
        ({"select_on": "test"}, "select_on", "'pgd', 'natural'"),
        ({"amp": "fp8"}, "amp", "'off', 'bf16'"),
        ({"cells": 2}, "cells", "cells >= number of stages (3)"),
        ({"drop_path_prob": 1.0}, "drop_path_prob", "drop_path_prob < 1"),
        ({"steps_per_epoch": 0}, "steps_per_epoch", "steps_per_epoch >= 1"),
        ({"batch_szie": 3}, "batch_szie", "unknown field"),
    ],
)
def test_validation_errors_name_the_field(mapping: dict, field: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        from_dict(RetrainConfig, mapping)
    assert info.value.field == field
    assert words in str(info.value)


def test_yaml_round_trip_with_fractions_and_nested_attack() -> None:
    text = """
placement: [accurate, robust, robust]
channel_ratios: [1, 2, 2]
epochs: 3
method: trades
attack: {eps: 8/255, alpha: 2/255, steps: 10}
schedule: cosine
"""
    cfg = from_dict(RetrainConfig, yaml.safe_load(text))
    assert cfg.placement == ("accurate", "robust", "robust")
    assert cfg.attack == AttackSpec(kind="pgd", eps=8 / 255, alpha=2 / 255, steps=10)
    again = from_dict(RetrainConfig, yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
    assert again == cfg
    assert again.layout().placement == ("accurate", "robust", "robust")


def test_learning_rate_schedules() -> None:
    step = RetrainConfig(epochs=10)
    assert [round(learning_rate(step, e), 8) for e in (0, 4, 5, 7, 8, 9)] == [
        0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    cos = RetrainConfig(epochs=4, schedule="cosine")
    lrs = [learning_rate(cos, e) for e in range(4)]
    assert lrs[0] == pytest.approx(0.1) and lrs[2] == pytest.approx(0.05)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
