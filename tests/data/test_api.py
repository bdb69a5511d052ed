"""The public surface of arnas_ray.data: registry, argument checks, transforms."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import arnas_ray.data as data
from arnas_ray.data import DATASETS, DataRequest, DataSplits, load_dataset
from arnas_ray.data._transforms import Cutout, RandomCropPad, RandomHorizontalFlip
from arnas_ray.errors import SpecError


def test_exports_and_registry() -> None:
    assert data.__all__ == sorted(data.__all__)
    # other test modules may register their own data sets (the registry is open to users)
    assert {"cifar10", "cifar100", "digits", "svhn", "synthetic", "tinyimagenet"} <= set(DATASETS)


def test_unknown_name_is_a_key_error_listing_the_valid_names() -> None:
    with pytest.raises(KeyError, match="unknown dataset 'mnist'.*'cifar10'.*'tinyimagenet'"):
        load_dataset("mnist")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"val_fraction": 1.0}, "dataset.val_fraction"),
        ({"val_fraction": -0.1}, "dataset.val_fraction"),
        ({"image_size": 0}, "dataset.image_size"),
        ({"cutout": -1}, "dataset.cutout"),
        ({"limit": 0}, "dataset.limit"),
        ({"num_classes": 3}, "dataset.num_classes"),  # synthetic-only option
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(SpecError) as info:
        load_dataset("digits", **kwargs)
    assert info.value.field == field
    assert repr(next(iter(kwargs.values()))) in str(info.value)


def test_val_fraction_zero_gives_an_empty_val() -> None:
    splits = load_dataset("digits", val_fraction=0.0)
    assert len(splits.val) == 0 and len(splits.train) + len(splits.test) == 1797


def test_random_crop_is_a_shifted_zero_padded_window() -> None:
    x = torch.rand(3, 8, 8)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    windows = {(i, j): padded[:, i : i + 8, j : j + 8] for i in range(5) for j in range(5)}
    seen = set()
    for seed in range(40):
        out = RandomCropPad(2)(x, torch.Generator().manual_seed(seed))
        match = [k for k, w in windows.items() if torch.equal(w, out)]
        assert len(match) == 1
        seen.add(match[0])
        assert torch.equal(out, RandomCropPad(2)(x, torch.Generator().manual_seed(seed)))
    assert len(seen) > 10  # offsets vary with the seed


def test_flip_and_cutout() -> None:
    x = torch.rand(3, 6, 6)
    assert torch.equal(RandomHorizontalFlip(1.0)(x), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(x), x)
    before = x.clone()
    out = Cutout(4)(x, torch.Generator().manual_seed(0))
    assert torch.equal(x, before)  # the input is never written
    zeroed = (out == 0).all(0)  # [H, W], same square on every channel
    assert 1 <= int(zeroed.sum()) <= 16
    assert torch.equal(out[:, ~zeroed], x[:, ~zeroed])
    rows, cols = zeroed.nonzero().unbind(1)
    assert int(zeroed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].sum()) == int(
        zeroed.sum()
    )  # a rectangle
    with pytest.raises(SpecError):
        Cutout(0)


def test_factories_get_one_frozen_request_and_their_own_options() -> None:
    seen: list[tuple[DataRequest, dict]] = []

    def probe(request: DataRequest, *, scale: float = 1.0) -> DataSplits:
        seen.append((request, {"scale": scale}))
        return load_dataset("synthetic", **request.as_kwargs(), num_train=40, num_test=8)

    name = "probe-request"
    if name not in DATASETS:
        DATASETS.add(name, probe)
    load_dataset(name, root="~/x", image_size=8, cutout=2, seed=5, limit=30, scale=2.0)
    request, options = seen[-1]
    assert request == DataRequest(root=Path("~/x").expanduser().absolute(), image_size=8,
                                  augment=True, cutout=2, val_fraction=0.1, seed=5, limit=30)
    assert options == {"scale": 2.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.seed = 1  # type: ignore[misc]
    with pytest.raises(SpecError, match=r"dataset.colour.*its options: \['scale'\]"):
        load_dataset(name, colour=1)


def test_keyword_form_factories_still_work() -> None:
    """A user factory written before DataRequest (keyword arguments) is called as before."""
    calls: list[dict] = []

    def legacy(*, root, image_size, augment, cutout, val_fraction, seed, limit) -> DataSplits:
        calls.append(dict(root=root, image_size=image_size, seed=seed, limit=limit))
        return load_dataset("synthetic", image_size=image_size, seed=seed, num_train=40,
                            num_test=8)

    name = "probe-legacy"
    if name not in DATASETS:
        DATASETS.add(name, legacy)
    splits = load_dataset(name, image_size=8, seed=3, limit=20)
    assert calls[-1] == {"root": None, "image_size": 8, "seed": 3, "limit": 20}
    assert splits.image_size == 8


@pytest.mark.parametrize(("kwargs", "field"), [({"cutout": -2}, "dataset.cutout"),
                                               ({"val_fraction": 1.5}, "dataset.val_fraction")])
def test_request_validates_its_fields(kwargs: dict, field: str) -> None:
    with pytest.raises(SpecError) as info:
        DataRequest(**kwargs)
    assert info.value.field == field
