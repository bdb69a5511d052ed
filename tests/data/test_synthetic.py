"""The synthetic data set: learnable, deterministic, configurable."""

from __future__ import annotations

import pytest
import torch

from arnas_ray.data import load_dataset
from arnas_ray.errors import SpecError


def _items(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(xs), torch.tensor(ys)


def test_defaults() -> None:
    splits = load_dataset("synthetic")
    assert len(splits.train) + len(splits.val) == 512
    assert len(splits.test) == 256
    assert splits.num_classes == 10 and splits.image_size == 16 and splits.channels == 3
    x, y = _items(splits.test)
    assert x.shape == (256, 3, 16, 16) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert set(y.tolist()) == set(range(10))


def test_learnable_by_nearest_class_mean() -> None:
    splits = load_dataset("synthetic", augment=False, noise=0.5, seed=0)
    x, y = _items(splits.train)
    means = torch.stack([x[y == c].mean(0) for c in range(10)]).flatten(1)  # [10, 768]
    tx, ty = _items(splits.test)
    accuracy = (torch.cdist(tx.flatten(1), means).argmin(1) == ty).float().mean()
    assert accuracy > 0.6  # chance is 0.1


def test_deterministic_and_seeded() -> None:
    a, b, c = (load_dataset("synthetic", seed=s) for s in (3, 3, 4))
    assert torch.equal(_items(a.test)[0], _items(b.test)[0])
    assert torch.equal(_items(a.val)[0], _items(b.val)[0])
    assert not torch.equal(_items(a.test)[0], _items(c.test)[0])


def test_options_and_limit() -> None:
    splits = load_dataset(
        "synthetic", num_classes=4, num_train=40, num_test=12, image_size=8, limit=20
    )
    assert splits.num_classes == 4 and splits.image_size == 8
    assert len(splits.train) + len(splits.val) == 20 and len(splits.test) == 12
    x, y = _items(splits.train)
    assert x.shape[1:] == (3, 8, 8) and int(y.max()) < 4
    with pytest.raises(SpecError) as info:
        load_dataset("synthetic", num_classes=1)
    assert info.value.field == "dataset.num_classes"
