"""The embedded digits data set: split sizes, stratification, values, shapes, determinism."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from arnas_ray.data import load_dataset
from arnas_ray.data._digits import load_digits_arrays


def _items(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(xs), torch.tensor(ys)


@pytest.fixture(scope="module")
def splits():
    return load_dataset("digits", seed=0)


def test_split_sizes_and_stratification(splits) -> None:
    sizes = [len(splits.train), len(splits.val), len(splits.test)]
    assert sum(sizes) == 1797
    assert abs(sizes[2] - 0.2 * 1797) <= 10  # test: 20 % per class
    assert abs(sizes[1] - 0.1 * (1797 - sizes[2])) <= 10  # val: val_fraction of the rest
    counts = np.bincount(load_digits_arrays()[1], minlength=10)
    for part, fraction in ((splits.test, 0.2), (splits.val, 0.08), (splits.train, 0.72)):
        per_class = np.bincount(_items(part)[1].numpy(), minlength=10)
        assert (per_class > 0).all()  # every class in every split
        assert np.allclose(per_class / counts, fraction, atol=0.02)  # stratified
    assert splits.num_classes == 10 and splits.channels == 3 and splits.image_size == 16


def test_values_and_shapes(splits) -> None:
    for part in (splits.train, splits.val, splits.test):
        x, y = _items(part)
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 16, 16)
        assert float(x.min()) == 0.0 and 0.9 < float(x.max()) <= 1.0
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey x3
        assert set(y.tolist()) == set(range(10))


def test_native_size_is_the_raw_pixels() -> None:
    splits = load_dataset("digits", image_size=8, augment=False, seed=0)
    images, labels = load_digits_arrays()
    x, y = _items(splits.test)
    assert x.shape[1:] == (3, 8, 8)
    raw = torch.from_numpy(images).float() / 16.0  # [1797, 8, 8]
    for xi, yi in zip(x[:20], y[:20]):  # each test item is one of the embedded images
        match = (raw == xi[0]).flatten(1).all(1).nonzero().flatten()
        assert match.numel() >= 1 and int(labels[int(match[0])]) == int(yi)


def test_resize_is_bilinear_without_antialias() -> None:
    images, _ = load_digits_arrays()
    x8 = load_dataset("digits", image_size=8, augment=False).test[0][0]
    x4 = load_dataset("digits", image_size=4, augment=False).test[0][0]
    expected = torch.nn.functional.interpolate(
        x8[None], size=(4, 4), mode="bilinear", align_corners=False, antialias=False
    )[0]
    assert torch.allclose(x4, expected)


def test_deterministic_given_seed() -> None:
    a, b, c = (load_dataset("digits", seed=s) for s in (0, 0, 1))
    for part in ("train", "val", "test"):
        xa, ya = _items(getattr(a, part) if part != "train" else a.train.source)
        xb, yb = _items(getattr(b, part) if part != "train" else b.train.source)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(_items(a.val)[0], _items(c.val)[0])
    assert not torch.equal(_items(a.test)[0], _items(c.test)[0])


def test_no_flip_in_digit_augmentation() -> None:
    # a mirrored digit is another digit or none, so the augmentation only crops
    text = repr(load_dataset("digits", cutout=4).train)
    assert "RandomCropPad(padding=2)" in text and "Cutout(length=4)" in text
    assert "Flip" not in text


def test_limit() -> None:
    small = load_dataset("digits", limit=100, seed=0)
    assert len(small.train) + len(small.val) == 100 and len(small.test) == 100


def test_matches_scikit_learn() -> None:
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    bunch = sklearn_datasets.load_digits()
    images, labels = load_digits_arrays()
    assert np.array_equal(images, bunch.images.astype(np.uint8))
    assert np.array_equal(labels, bunch.target)


def test_loads_without_sklearn_or_ray() -> None:
    code = (
        "import sys; sys.modules['sklearn'] = None; sys.modules['ray'] = None\n"
        "from arnas_ray.data import load_dataset\n"
        "s = load_dataset('digits'); assert len(s.test) > 300\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
