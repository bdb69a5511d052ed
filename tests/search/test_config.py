"""SearchConfig: validation errors name the field; from_dict / to_dict round trip."""

from __future__ import annotations

import pytest

from arnas_ray.attacks import AttackSpec
from arnas_ray.errors import SpecError
from arnas_ray.search import SearchConfig


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"channels": 0}, "channels"),
    ({"channels": 7}, "channels"),
    ({"epochs": -1}, "epochs"),
    ({"train_portion": 1.0}, "train_portion"),
    ({"lr": 0.0}, "lr"),
    ({"momentum": 1.0}, "momentum"),
    ({"order": "third"}, "order"),
    ({"strategy": "pareto"}, "strategy"),
    ({"normalization": "l1"}, "normalization"),
    ({"fixed_weights": (0.0, 0.0)}, "fixed_weights"),
    ({"steps_per_epoch": 0}, "steps_per_epoch"),
    ({"cells": 2}, "cells"),
    ({"amp": "fp8"}, "amp"),
    ({"primitives": "nasnet"}, "primitives"),
])
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(SpecError) as info:
        SearchConfig(**kwargs)
    assert info.value.field == field
    assert field in str(info.value)


def test_choice_errors_list_the_allowed_values():
    with pytest.raises(SpecError, match=r"'third'.*\('first', 'second', 'exact'\)"):
        SearchConfig(order="third")


@pytest.mark.parametrize(("data", "field"), [
    ({"epochs": "ten"}, "epochs"),
    ({"epoch": 3}, "epoch"),
    ({"attack": {"kind": "fgsm"}}, "attack.kind"),
    ({"attack": {"eps": -1}}, "attack.eps"),
    ({"channel_ratios": [1, "x"]}, "channel_ratios"),
])
def test_from_dict_errors_name_the_field_path(data, field):
    with pytest.raises(SpecError) as info:
        SearchConfig.from_dict(data)
    assert info.value.field == field


def test_from_dict_round_trip_and_lists_become_tuples():
    config = SearchConfig(placement=["accurate", "robust"], channel_ratios=[1, 2], channels=6,
                          cells=4, strategy="fixed", fixed_weights=[1, 0.1], order="first",
                          steps_per_epoch=3, attack=AttackSpec(kind="pgd", steps=3))
    assert config.placement == ("accurate", "robust") and config.channel_ratios == (1.0, 2.0)
    assert SearchConfig.from_dict(config.to_dict()) == config
    assert SearchConfig.from_dict(None) == SearchConfig()
    assert SearchConfig.from_dict({"attack": {"steps": 3, "eps": "4/255"}}).attack.eps == 4 / 255


def test_equal_width_rescales_the_base_width():
    config = SearchConfig(channels=8, channel_ratios=(1, 1, 1), equal_width=True)
    assert config.width() != 8  # the sum of stage widths matches the arnas layout's (1+2+2)*8
    assert SearchConfig(channels=8).width() == 8
