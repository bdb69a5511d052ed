"""Data sets as train / val / test splits of ``[0, 1]`` image tensors, and seeded loaders.

Built-in data sets (``sorted(DATASETS)``):

- ``digits``: scikit-learn's 1,797 real 8x8 digits, embedded in the package (no download,
  no scikit-learn at run time), resized to 16x16 by default. Split per class into test 20 %,
  val ``val_fraction`` of the rest, train the remainder.
- ``synthetic``: class patterns plus noise, for tests (options ``num_classes``, ``num_train``,
  ``num_test``, ``noise``).
- ``cifar10``, ``cifar100``, ``svhn``, ``tinyimagenet``: read from a local ``root`` (nothing is
  downloaded); the error for a bad ``root`` shows the layout expected.

Every factory of the registry ``DATASETS`` is called as ``factory(request, **options)``
with a frozen :class:`DataRequest` (root, image size, augmentation, cutout, val fraction,
seed, limit) and its own keyword options.

An unknown name raises ``KeyError`` listing the valid names (as every registry of arnas-ray
does); a bad argument or root raises :class:`~arnas_ray.errors.SpecError` with field
``"dataset.<argument>"``.

Example:
    >>> from arnas_ray.data import infinite_batches, load_dataset, make_loader
    >>> splits = load_dataset("digits", seed=0)
    >>> train = make_loader(splits.train, 64, shuffle=True, seed=0)
    >>> x, y = next(infinite_batches(train))
    >>> tuple(x.shape)
    (64, 3, 16, 16)
"""

from __future__ import annotations

from arnas_ray.data import _digits, _synthetic, _vision  # noqa: F401  (register the data sets)
from arnas_ray.data._base import DATASETS, DataRequest, DatasetFactory, DataSplits, load_dataset
from arnas_ray.data._loader import infinite_batches, make_loader

__all__ = [
    "DATASETS",
    "DataRequest",
    "DataSplits",
    "DatasetFactory",
    "infinite_batches",
    "load_dataset",
    "make_loader",
]
