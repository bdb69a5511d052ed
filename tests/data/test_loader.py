"""make_loader determinism and infinite_batches."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import TensorDataset

from arnas_ray.data import infinite_batches, load_dataset, make_loader


@pytest.fixture(scope="module")
def splits():
    return load_dataset("digits", image_size=8, cutout=3, seed=0)


def _batches(loader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(itertools.islice(infinite_batches(loader), n))


def test_same_seed_same_batches(splits) -> None:
    a = _batches(make_loader(splits.train, 32, shuffle=True, seed=5), 3)
    b = _batches(make_loader(splits.train, 32, shuffle=True, seed=5), 3)
    c = _batches(make_loader(splits.train, 32, shuffle=True, seed=6), 3)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert xa.shape == (32, 3, 8, 8) and ya.dtype == torch.int64
    assert not torch.equal(a[0][1], c[0][1])  # another order


def test_epochs_differ_and_cover_the_data(splits) -> None:
    loader = make_loader(splits.val, 16, shuffle=True, seed=0)
    first, second = ([y for _, y in loader] for _ in range(2))
    assert not torch.equal(torch.cat(first), torch.cat(second))  # reshuffled
    assert sorted(torch.cat(first).tolist()) == sorted(torch.cat(second).tolist())
    assert sum(len(y) for y in first) == len(splits.val)


def test_workers_do_not_change_the_batches(splits) -> None:
    single = _batches(make_loader(splits.train, 64, shuffle=True, seed=2), 4)
    multi = _batches(make_loader(splits.train, 64, shuffle=True, seed=2, num_workers=2), 4)
    for (xa, ya), (xb, yb) in zip(single, multi):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_unshuffled_order_and_plain_datasets() -> None:
    dataset = TensorDataset(torch.arange(10.0), torch.arange(10))
    loader = make_loader(dataset, 4, shuffle=False, drop_last=True)
    assert [y.tolist() for _, y in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]


class _CountingLoader:
    def __init__(self, loader) -> None:
        self.loader = loader
        self.iterators = 0

    def __iter__(self):
        self.iterators += 1
        return iter(self.loader)


def test_infinite_batches_cycles_past_the_end() -> None:
    dataset = TensorDataset(torch.zeros(10, 1), torch.arange(10))
    counting = _CountingLoader(make_loader(dataset, 4, shuffle=True, seed=0))
    batches = _batches(counting, 7)  # 3 batches per epoch (4, 4, 2)
    sizes = [len(y) for _, y in batches]
    assert sizes == [4, 4, 2, 4, 4, 2, 4]
    assert sorted(torch.cat([y for _, y in batches[3:6]]).tolist()) == list(range(10))
    assert counting.iterators == 3  # one iterator per epoch, not per step


def test_infinite_batches_refuses_an_empty_loader() -> None:
    dataset = TensorDataset(torch.zeros(3, 1), torch.arange(3))
    with pytest.raises(ValueError, match="no batch"):
        next(infinite_batches(make_loader(dataset, 4, shuffle=False, drop_last=True)))
