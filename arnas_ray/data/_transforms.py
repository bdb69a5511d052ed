"""Train-time augmentations on image tensors, driven by an explicit ``torch.Generator``.

Each transform maps a float image ``x: Tensor[C, H, W]`` to a new tensor of the same shape and
never writes into its input (datasets hand out views of their stored tensors). Random draws
come from the ``generator`` argument, so an augmentation is a pure function of the image and
the generator's seed; with ``generator=None`` they come from torch's global generator, which
keeps the transforms usable inside a ``torchvision.transforms.Compose``.

They reproduce the reference's PIL pipeline on tensors: ``RandomCrop(size, padding)`` (zero
fill), ``RandomHorizontalFlip()`` and DARTS's ``Cutout(length)``, applied after the pixels are
in [0, 1] (the reference's ``ToTensor``; there is no normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from arnas_ray._config import check

__all__ = ["Augment", "Cutout", "RandomCropPad", "RandomHorizontalFlip", "Transform"]


class Transform(Protocol):
    """An augmentation: ``(x[C, H, W], generator) -> x'[C, H, W]``."""

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor: ...


def _randint(high: int, generator: torch.Generator | None) -> int:
    """One integer uniform in ``[0, high)``."""
    return int(torch.randint(high, (), generator=generator))


class RandomCropPad:
    """Zero-pad each side by ``padding`` pixels, then crop back to the input size at a random offset.

    Equal to ``torchvision.transforms.RandomCrop(size, padding=padding)`` (constant fill 0) on
    an image of side ``size``.

    Args:
        padding: pixels of zero padding on each side; the crop moves by up to ``padding``.
    """

    def __init__(self, padding: int) -> None:
        check(padding >= 0, "padding", "padding >= 0", padding)
        self.padding = padding

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        p = self.padding
        if p == 0:
            return x
        h, w = x.shape[-2:]
        padded = F.pad(x, (p, p, p, p))  # [C, H + 2p, W + 2p]
        top = _randint(2 * p + 1, generator)
        left = _randint(2 * p + 1, generator)
        return padded[..., top : top + h, left : left + w]  # [C, H, W]

    def __repr__(self) -> str:
        return f"RandomCropPad(padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror the image left-right with probability ``p``.

    Not used for digits or other symbol data, where a mirror image is a different (or no) symbol.
    """

    def __init__(self, p: float = 0.5) -> None:
        check(0.0 <= p <= 1.0, "p", "0 <= p <= 1", p)
        self.p = p

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if float(torch.rand((), generator=generator)) < self.p:
            return x.flip(-1)
        return x

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Cutout:
    """Zero a square of side ``length`` centred at a uniformly drawn pixel (DeVries & Taylor, 2017).

    Matches DARTS's ``utils.Cutout``: the centre is uniform over the image, the square spans
    ``length // 2`` pixels on each side of it and is clipped at the borders (so it can be
    smaller near an edge). Applied to every channel.

    Args:
        length: side of the square in pixels (16 in the ARNAS retraining on CIFAR-10).
    """

    def __init__(self, length: int) -> None:
        check(length > 0, "length", "length > 0", length)
        self.length = length

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        h, w = x.shape[-2:]
        cy = _randint(h, generator)
        cx = _randint(w, generator)
        half = self.length // 2
        y1, y2 = max(cy - half, 0), min(cy + half, h)
        x1, x2 = max(cx - half, 0), min(cx + half, w)
        out = x.clone()  # never write into a view of the stored data set
        out[..., y1:y2, x1:x2] = 0.0
        return out

    def __repr__(self) -> str:
        return f"Cutout(length={self.length})"


class Augment:
    """Apply transforms in order, all drawing from the same generator.

    Args:
        transforms: the transforms, in the order they are applied.
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = tuple(transforms)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for transform in self.transforms:
            x = transform(x, generator)
        return x

    def __bool__(self) -> bool:
        return bool(self.transforms)

    def __repr__(self) -> str:
        return f"Augment({list(self.transforms)!r})"
