"""``synthetic``: class-conditional colour patterns plus Gaussian noise, for tests.

Each class has one fixed smooth pattern (uniform random colours on a 4x4 grid, bilinearly
upsampled); an item is its class pattern plus pixel noise, clipped to [0, 1]. A tiny CNN (or a
nearest-class-mean rule on raw pixels) learns it in a few steps; the noise keeps it from being
a lookup. The patterns are the same for every ``seed`` (the task does not change), while the
noise, the labels' order and the splits follow ``seed``.
"""

from __future__ import annotations

import numpy as np
import torch

from arnas_ray._config import check
from arnas_ray.data._base import DATASETS, DataRequest, DataSplits, make_splits
from arnas_ray.data._datasets import TensorImages, resize

__all__ = ["synthetic_patterns"]

_DEFAULT_SIZE = 16
_PATTERN_SEED = 20240605  # fixed: the patterns define the task, seeds only vary the samples
_PATTERN_GRID = 4


def synthetic_patterns(num_classes: int, image_size: int) -> torch.Tensor:
    """The class patterns, ``float32 [num_classes, 3, image_size, image_size]`` in [0, 1]."""
    generator = torch.Generator().manual_seed(_PATTERN_SEED)
    coarse = torch.rand(num_classes, 3, _PATTERN_GRID, _PATTERN_GRID, generator=generator)
    return resize(coarse, image_size, antialias=True)  # [K, 3, S, S]


def _sample(
    patterns: torch.Tensor, n: int, noise: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    k = patterns.shape[0]
    labels = torch.arange(n) % k  # balanced classes
    labels = labels[torch.randperm(n, generator=generator)]
    eps = torch.randn((n, *patterns.shape[1:]), generator=generator)  # [n, 3, S, S]
    images = (patterns[labels] + noise * eps).clamp_(0.0, 1.0)
    return images, labels


@DATASETS.register("synthetic")
def _synthetic(
    request: DataRequest,
    *,
    num_classes: int = 10,
    num_train: int = 512,
    num_test: int = 256,
    noise: float = 0.3,
) -> DataSplits:
    """Synthetic patterns: ``num_train`` training items (val is held out of them), ``num_test`` test.

    Args:
        num_classes: number of classes (patterns), at least 2.
        num_train: training items generated before the val split.
        num_test: test items.
        noise: standard deviation of the Gaussian pixel noise.

    Train augmentation is a random crop with zero padding ``max(1, image_size // 8)``; no flip,
    since a mirrored pattern is not its class pattern. ``request.root`` is ignored.
    """
    check(num_classes >= 2, "dataset.num_classes", "num_classes >= 2", num_classes)
    check(num_train >= 1, "dataset.num_train", "num_train >= 1", num_train)
    check(num_test >= 1, "dataset.num_test", "num_test >= 1", num_test)
    check(noise >= 0.0, "dataset.noise", "noise >= 0", noise)
    size = request.size(_DEFAULT_SIZE)
    patterns = synthetic_patterns(num_classes, size)
    generator = torch.Generator().manual_seed(request.seed)
    train_x, train_y = _sample(patterns, num_train, noise, generator)
    test_x, test_y = _sample(patterns, num_test, noise, generator)
    return make_splits("synthetic", request, source=TensorImages(train_x, train_y),
                       pool=np.arange(num_train), test_source=TensorImages(test_x, test_y),
                       test_pool=np.arange(num_test), num_classes=num_classes, image_size=size,
                       padding=max(1, size // 8), flip=False)
