"""Tiny search fixtures: a synthetic data set and a search config for end-to-end runs; a float64 supernet (C=4, 4 cells so that all three cell types of the
`arnas` layout occur, 8x8 inputs) and its batches."""

from __future__ import annotations

import pytest
import torch

from arnas_ray.attacks import AttackSpec
from arnas_ray.data import load_dataset
from arnas_ray.search import ArchBatch, SearchConfig, build_supernet


def loop_config(**kw) -> SearchConfig:
    """A two-epoch search of two steps each on the ``loop_data`` set (C=4, 3 cells, PGD-2)."""
    base = dict(channels=4, cells=3, epochs=2, batch_size=4, steps_per_epoch=2, eval_samples=8,
                eval_attack_steps=2, seed=3, attack=AttackSpec(kind="pgd", steps=2))
    base.update(kw)
    return SearchConfig(**base)


def tiny_supernet(seed: int = 0, *, fused: bool = True, dtype: torch.dtype = torch.float64,
                  cells: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = SearchConfig(channels=4, cells=cells, fused=fused)
    model = build_supernet(config, num_classes=10).to(dtype)
    with torch.no_grad():  # alphas of 1e-3 * randn make every op weigh the same; spread them
        for a in model.alphas.values():
            a.normal_(0.0, 0.5)
    return model.train()


def tiny_batch(seed: int = 1, *, n: int = 6, dtype: torch.dtype = torch.float64) -> ArchBatch:
    g = torch.Generator().manual_seed(seed)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.rand(n, 3, 8, 8, generator=g, dtype=dtype),
                torch.randint(0, 10, (n,), generator=g))

    (x_tr, y_tr), (x_val, y_val) = draw(), draw()
    x_adv = (x_val + 0.03 * torch.randn(x_val.shape, generator=g, dtype=dtype)).clamp(0, 1)
    return ArchBatch(x_tr, y_tr, x_val, y_val, x_adv)


@pytest.fixture
def supernet() -> torch.nn.Module:
    return tiny_supernet()


@pytest.fixture
def batch() -> ArchBatch:
    return tiny_batch()


@pytest.fixture(scope="module")
def data():
    """A tiny synthetic data set (4 classes, 8x8) for end-to-end searches."""
    return load_dataset("synthetic", image_size=8, num_classes=4, num_train=48, num_test=8,
                        val_fraction=0.2, seed=0, augment=False)
