"""Map-style datasets behind every split: images as tensors, index views and augmentation.

Every dataset here yields ``(x, y)`` with ``x: float32 Tensor[C, H, W]`` in [0, 1] and
``y: int``. A split is a view (``IndexView``) over one shared source, so the train and val
splits of a data set read the same memory or files; augmentation is a wrapper
(``Augmented``) put only around the train view.

Seeded augmentation: ``make_loader`` feeds indices that are ``SeededIndex`` objects, plain
``int`` subclasses that carry a 63-bit seed drawn from the loader's generator. ``Augmented``
seeds a private ``torch.Generator`` with it, so each item's augmentation depends only on the
loader seed and the item's position in the epoch, whatever the number of workers. Any other
dataset just sees an ``int``. Given a plain ``int``, ``Augmented`` draws from torch's global
generator (seeded per worker by the DataLoader).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "Augmented",
    "FileImages",
    "IndexView",
    "SeededIndex",
    "TensorImages",
    "labels_of",
    "resize",
]

logger = logging.getLogger(__name__)

Item = tuple[Tensor, int]


class SeededIndex(int):
    """An ``int`` index that also carries the seed of its item's augmentation."""

    seed: int

    def __new__(cls, index: int, seed: int) -> SeededIndex:
        obj = super().__new__(cls, index)
        obj.seed = seed
        return obj

    def __reduce__(self) -> tuple[Any, tuple[int, int]]:  # survives the trip to a worker
        return (SeededIndex, (int(self), self.seed))


def resize(x: Tensor, size: int, *, antialias: bool) -> Tensor:
    """Bilinear resize of ``x[..., H, W]`` (one image or a batch) to ``size x size``.

    Bilinear weights are convex, so values stay in the input's range (clamped against
    rounding). ``antialias`` only matters when shrinking.
    """
    if x.shape[-2:] == (size, size):
        return x
    batched = x if x.dim() == 4 else x.unsqueeze(0)  # [N, C, H, W]
    out = F.interpolate(
        batched, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias
    )
    out = out.clamp_(0.0, 1.0)
    return out if x.dim() == 4 else out.squeeze(0)


class TensorImages(Dataset[Item]):
    """Images held in one tensor, converted to float [0, 1] and resized per item if needed.

    Args:
        images: ``uint8 [N, C, H, W]`` (0..255) or ``float32 [N, C, H, W]`` already in [0, 1].
        labels: ``int64 [N]``.
        image_size: side of the items returned; if it differs from ``H``/``W`` each item is
            resized (bilinear, antialiased when shrinking), which keeps the stored set compact.
    """

    def __init__(self, images: Tensor, labels: Tensor, image_size: int | None = None) -> None:
        if images.dim() != 4 or labels.shape != (images.shape[0],):
            raise ValueError(
                f"expected images [N, C, H, W] and labels [N], got {tuple(images.shape)} and "
                f"{tuple(labels.shape)}"
            )
        if images.dtype not in (torch.uint8, torch.float32):
            raise TypeError(f"images must be uint8 or float32, got {images.dtype}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.image_size = int(image_size if image_size is not None else images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> Item:
        x = self.images[index]  # [C, H, W]
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
        return resize(x, self.image_size, antialias=True), int(self.labels[index])


def _load_rgb(path: str) -> Tensor:
    with Image.open(path) as img:
        from torchvision.transforms.functional import (
            pil_to_tensor,  # lazy: torchvision is slow to import
        )

        return pil_to_tensor(img.convert("RGB"))  # uint8 [3, H, W]


class FileImages(Dataset[Item]):
    """Images read from files on access (for sets too large to decode up front).

    Args:
        samples: ``(path, label)`` pairs.
        image_size: side of the items returned (bilinear resize, antialiased when shrinking).
        loader: reads one file into ``uint8 [3, H, W]``; PIL with RGB conversion by default.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        image_size: int,
        loader: Callable[[str], Tensor] = _load_rgb,
    ) -> None:
        self.samples = list(samples)
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)
        self.image_size = image_size
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Item:
        path, label = self.samples[index]
        x = self.loader(path).float().div_(255.0)  # [3, H, W] in [0, 1]
        return resize(x, self.image_size, antialias=True), label


class IndexView(Dataset[Item]):
    """A fixed subset of another dataset (like ``torch.utils.data.Subset``), in the given order.

    Args:
        source: the dataset viewed.
        indices: positions in ``source``.
    """

    def __init__(self, source: Dataset[Item], indices: Sequence[int] | np.ndarray) -> None:
        self.source = source
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __getitem__(self, index: int) -> Item:
        return self.source[int(self.indices[index])]

    @property
    def labels(self) -> Tensor:
        """Labels of the viewed items, ``int64 [len(self)]`` (no image is read)."""
        return labels_of(self.source)[self.indices]

    def __repr__(self) -> str:
        return f"IndexView({len(self)} of {type(self.source).__name__})"


def labels_of(dataset: Dataset[Item]) -> Tensor:
    """The ``labels`` tensor a dataset exposes (read without touching images)."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise TypeError(f"{type(dataset).__name__} does not expose .labels")
    return torch.as_tensor(labels)


class Augmented(Dataset[Item]):
    """Apply a seeded augmentation to every item of ``source``.

    Args:
        source: the un-augmented dataset.
        augment: ``(x, generator) -> x'``; see :mod:`arnas_ray.data._transforms`.
    """

    def __init__(
        self, source: Dataset[Item], augment: Callable[[Tensor, torch.Generator | None], Tensor]
    ) -> None:
        self.source = source
        self.augment = augment

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Item:
        x, y = self.source[int(index)]
        seed = getattr(index, "seed", None)
        generator = None
        if seed is not None:
            generator = torch.Generator()
            generator.manual_seed(seed)
        return self.augment(x, generator), y

    @property
    def labels(self) -> Tensor:
        """Labels of the items, ``int64 [len(self)]`` (no image is read)."""
        return labels_of(self.source)

    def __repr__(self) -> str:
        return f"Augmented({len(self)} items, {self.augment!r})"
