"""Seeded data loaders and an endless batch stream that keeps its workers."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from arnas_ray._config import check
from arnas_ray.data._datasets import SeededIndex

__all__ = ["infinite_batches", "make_loader"]

_SEED_HIGH = 2**63 - 1


class _SeededSampler(Sampler[SeededIndex]):
    """Yields each position once per epoch (shuffled or in order), each with a fresh item seed.

    The order and the seeds of an epoch are drawn from ``generator`` when the epoch starts,
    in the main process, so they do not depend on the number of workers.
    """

    def __init__(self, size: int, *, shuffle: bool, generator: torch.Generator) -> None:
        self.size = size
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[SeededIndex]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=self.generator).tolist()
        else:
            order = list(range(self.size))
        seeds = torch.randint(_SEED_HIGH, (self.size,), generator=self.generator).tolist()
        for index, seed in zip(order, seeds):
            yield SeededIndex(index, seed)


def make_loader(
    dataset: Dataset[Any],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """A ``DataLoader`` whose order and augmentation are fixed by ``seed``.

    Equal seeds give equal batches, epoch after epoch, for any ``num_workers``: the sampler
    draws each epoch's order and one seed per item from a generator seeded with ``seed``, and
    the train split of :func:`load_dataset` seeds each item's augmentation with it. Workers
    are persistent, so iterating again (next epoch, :func:`infinite_batches`) reuses them.

    Args:
        dataset: a map-style dataset (any; the item seeds only matter to arnas-ray's splits).
        batch_size: items per batch.
        shuffle: reshuffle every epoch.
        seed: seeds the order and the augmentation.
        drop_last: drop the last incomplete batch.
        num_workers: worker processes (0: load in the main process).
        pin_memory: pin batches in page-locked memory for faster copies to a GPU.

    Returns:
        The loader; batches are ``(x[B, C, H, W], y[B])``.

    Raises:
        SpecError: ``batch_size < 1`` or ``num_workers < 0`` (field ``loader.<name>``).

    Example:
        >>> from arnas_ray.data import load_dataset, make_loader
        >>> splits = load_dataset("digits", image_size=8)
        >>> x, y = next(iter(make_loader(splits.train, 32, shuffle=True, seed=1)))
        >>> tuple(x.shape), tuple(y.shape)
        ((32, 3, 8, 8), (32,))
    """
    check(batch_size >= 1, "loader.batch_size", "batch_size >= 1", batch_size)
    check(num_workers >= 0, "loader.num_workers", "num_workers >= 0", num_workers)
    if not isinstance(dataset, Sized):
        raise TypeError(f"make_loader needs a map-style dataset with len(), got {type(dataset)}")
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = _SeededSampler(len(dataset), shuffle=shuffle, generator=generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=generator,  # also seeds the workers' global generators
    )


def infinite_batches(loader: DataLoader[Any]) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield batches from ``loader`` forever, starting a new epoch at the end of each.

    Use it where a step needs "the next batch" of a second loader (DARTS's validation batch for
    the architecture step): unlike ``next(iter(loader))`` every step, which restarts the
    workers and always returns a first batch, this keeps one iterator per epoch and, with
    :func:`make_loader`'s persistent workers, one set of workers for the whole run.

    Args:
        loader: any iterable of batches, typically from :func:`make_loader`.

    Raises:
        ValueError: the loader yields no batch in an epoch (it would loop forever).

    Example:
        >>> from arnas_ray.data import infinite_batches, load_dataset, make_loader
        >>> batches = infinite_batches(make_loader(load_dataset("digits").val, 64, shuffle=True))
        >>> x, y = next(batches)
    """
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError(
                "loader yielded no batch (empty dataset, or drop_last with fewer items than "
                "batch_size); infinite_batches would never return"
            )
