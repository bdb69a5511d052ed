"""Tiny search fixtures: a float64 supernet (C=4, 4 cells so that all three cell types of the
`arnas` layout occur, 8x8 inputs) and its batches."""

from __future__ import annotations

import pytest
import torch

from arnas_ray.search import ArchBatch, SearchConfig, build_supernet


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
