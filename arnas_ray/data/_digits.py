"""``digits``: the 1,797 real 8x8 handwritten digits of scikit-learn (UCI), embedded in the package.

``digits.npz`` (made by ``scripts/make_digits_npz.py``) holds ``images`` (uint8 [1797, 8, 8],
grey levels 0..16) and ``labels`` (uint8 [1797]). Loading needs neither scikit-learn nor a
download and takes milliseconds, which makes it the data set of tests, demos and CI.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from arnas_ray.data._base import DATASETS, DataRequest, DataSplits, make_splits, stratified_holdout
from arnas_ray.data._datasets import TensorImages, resize

__all__ = ["load_digits_arrays"]

_TEST_FRACTION = 0.2
_DEFAULT_SIZE = 16
_NUM_CLASSES = 10


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The embedded digits: ``images`` uint8 [1797, 8, 8] in 0..16 and ``labels`` int64 [1797]."""
    with resources.files("arnas_ray.data").joinpath("digits.npz").open("rb") as f:
        with np.load(f, allow_pickle=False) as npz:
            return npz["images"].copy(), npz["labels"].astype(np.int64)


@DATASETS.register("digits")
def _digits(request: DataRequest) -> DataSplits:
    """Digits, split per class: test 20 %, val ``val_fraction`` of the rest, train the remainder.

    Pixels are scaled from 0..16 to [0, 1], the grey channel is repeated to 3 channels, and the
    whole set is resized once at load time (bilinear, no antialiasing) to ``image_size``
    (default 16) and kept in memory as one tensor.

    Train augmentation is a random crop with zero padding ``max(1, image_size // 8)``, and no
    horizontal flip: a mirrored 2, 3, 4, 5, 6, 7 or 9 is not that digit (and not any digit),
    so flipping would teach the model wrong labels. ``root`` is ignored.
    """
    size = request.size(_DEFAULT_SIZE)  # request.root is ignored: embedded in the package
    images, labels = load_digits_arrays()
    x = torch.from_numpy(images).float().div_(16.0).unsqueeze(1)  # [N, 1, 8, 8] in [0, 1]
    x = resize(x, size, antialias=False).repeat(1, 3, 1, 1).contiguous()  # [N, 3, size, size]
    source = TensorImages(x, torch.from_numpy(labels))
    rng = request.rng()
    pool, test_pool = stratified_holdout(labels, _TEST_FRACTION, rng)
    return make_splits("digits", request, source=source, pool=pool, test_source=source,
                       test_pool=test_pool, num_classes=_NUM_CLASSES, image_size=size,
                       padding=max(1, size // 8), flip=False, rng=rng)
