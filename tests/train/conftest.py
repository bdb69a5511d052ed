"""Tiny data and configs for the retraining tests (CPU, seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from arnas_ray.attacks import AttackSpec
from arnas_ray.data import DataSplits, load_dataset
from arnas_ray.train import RetrainConfig


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a shared, oversubscribed CPU
    OpenMP's spinning threads can make each step tens of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data() -> DataSplits:
    """4 classes of 8x8 synthetic patterns: 72 train, 24 val, 32 test items."""
    return load_dataset("synthetic", image_size=8, num_classes=4, num_train=96, num_test=32,
                        val_fraction=0.25, seed=0)


def tiny_config(**overrides: Any) -> RetrainConfig:
    """C=4, 3 cells, 2 epochs of 2 steps of 8 images, PGD-2 training and validation."""
    base: dict[str, Any] = dict(
        channels=4, cells=3, epochs=2, batch_size=8, steps_per_epoch=2, cutout=0,
        val_samples=8, attack=AttackSpec(kind="pgd", steps=2, eps=0.1, alpha=0.05),
        eval_attack=AttackSpec(kind="pgd", steps=2, eps=0.1, alpha=0.05),
    )
    base.update(overrides)
    return RetrainConfig(**base)
