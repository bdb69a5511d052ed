"""CIFAR-10/100, SVHN and Tiny-ImageNet read through load_dataset from tiny files in each format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from arnas_ray.data import load_dataset, make_loader
from arnas_ray.errors import SpecError
from tests.data._formats import WNIDS, Written, write_cifar, write_svhn, write_tinyimagenet

VAL_FRACTION = 0.34  # one item per class when each class has three


def _items(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(xs), torch.tensor(ys)


def _as_float(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).float() / 255.0


def _rows_in(xs: torch.Tensor, pool: torch.Tensor) -> list[int]:
    """For each image in xs, the position of the identical image in pool (or -1)."""
    flat, ref = xs.flatten(1), pool.flatten(1)
    return [int(m.nonzero()[0]) if m.any() else -1 for m in (flat[:, None] == ref[None]).all(-1)]


def _check_splits(splits, written: Written, *, num_classes: int, size: int, exact: bool) -> None:
    n_train = len(written.train_y)
    assert splits.num_classes == num_classes
    assert splits.image_size == size and splits.channels == 3
    assert len(splits.train) + len(splits.val) == n_train
    assert len(splits.test) == len(written.test_y)
    for part in (splits.train, splits.val, splits.test):
        x, y = _items(part)
        assert x.dtype == torch.float32 and x.shape[1:] == (3, size, size)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert 0 <= int(y.min()) and int(y.max()) < num_classes
    # every class appears in val (stratified) and train
    assert set(_items(splits.val)[1].tolist()) == set(written.train_y.tolist())
    assert set(_items(splits.train)[1].tolist()) == set(written.train_y.tolist())
    if exact:  # val and test are the stored pixels, unaugmented, with their labels
        test_x, test_y = _items(splits.test)
        assert torch.equal(test_x, _as_float(written.test_x))
        assert torch.equal(test_y, torch.from_numpy(written.test_y))
        val_x, val_y = _items(splits.val)
        rows = _rows_in(val_x, _as_float(written.train_x))
        assert -1 not in rows
        assert val_y.tolist() == written.train_y[rows].tolist()


def _check_augmentation_only_on_train(splits) -> None:
    def first(dataset, seed: int) -> torch.Tensor:
        return next(iter(make_loader(dataset, 64, shuffle=False, seed=seed)))[0]

    assert torch.equal(first(splits.train, 0), first(splits.train, 0))
    assert not torch.equal(first(splits.train, 0), first(splits.train, 1))
    for part in (splits.val, splits.test):
        assert torch.equal(first(part, 0), first(part, 1))


@pytest.mark.parametrize("hundred", [False, True], ids=["cifar10", "cifar100"])
def test_cifar_loads(tmp_path: Path, hundred: bool, accept_unofficial_files: None) -> None:
    written = write_cifar(tmp_path, hundred=hundred)
    name = "cifar100" if hundred else "cifar10"
    splits = load_dataset(name, root=tmp_path, val_fraction=VAL_FRACTION, seed=0)
    k = 100 if hundred else 10
    assert splits.name == name
    assert len(splits.val) == k  # one per class
    _check_splits(splits, written, num_classes=k, size=32, exact=True)
    _check_augmentation_only_on_train(splits)
    assert "RandomHorizontalFlip" in repr(splits.train)


def test_cifar_options(tmp_path: Path, accept_unofficial_files: None) -> None:
    write_cifar(tmp_path, hundred=False)
    inner = load_dataset("cifar10", root=tmp_path / "cifar-10-batches-py", val_fraction=0.34)
    assert len(inner.train) == 20  # the data set's own folder is accepted as root
    small = load_dataset("cifar10", root=str(tmp_path), image_size=16, limit=10, cutout=8)
    assert len(small.train) + len(small.val) == 10 and len(small.test) == 10
    assert small.image_size == 16 and small.train[0][0].shape == (3, 16, 16)
    assert "Cutout(length=8)" in repr(small.train)
    plain = load_dataset("cifar10", root=tmp_path, augment=False)
    assert not hasattr(plain.train, "augment")  # no augmentation wrapper at all


def test_cifar_official_checksums_are_kept(tmp_path: Path) -> None:
    write_cifar(tmp_path, hundred=False)
    with pytest.raises(SpecError, match="md5") as info:
        load_dataset("cifar10", root=tmp_path)
    assert info.value.field == "dataset.root"
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)


def test_cifar_malformed_pickle(tmp_path: Path, accept_unofficial_files: None) -> None:
    write_cifar(tmp_path, hundred=False)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(SpecError, match="cannot be read") as info:
        load_dataset("cifar10", root=tmp_path)
    assert "data_batch_1 .. data_batch_5" in str(info.value)


def test_svhn_loads(tmp_path: Path, accept_unofficial_files: None) -> None:
    written = write_svhn(tmp_path / "svhn")
    assert (written.train_y == 0).any()  # written as label 10
    splits = load_dataset("svhn", root=tmp_path / "svhn", val_fraction=VAL_FRACTION, seed=3)
    _check_splits(splits, written, num_classes=10, size=32, exact=True)
    _check_augmentation_only_on_train(splits)
    assert "Flip" not in repr(splits.train)  # a mirrored digit is not that digit


def test_svhn_checksums_are_kept(tmp_path: Path) -> None:
    write_svhn(tmp_path)
    with pytest.raises(SpecError, match="md5"):
        load_dataset("svhn", root=tmp_path)


def test_tinyimagenet_loads(tmp_path: Path) -> None:
    root = tmp_path / "tiny-imagenet-200"
    written = write_tinyimagenet(root)
    splits = load_dataset("tinyimagenet", root=root, val_fraction=0.25, seed=1)
    _check_splits(splits, written, num_classes=len(WNIDS), size=64, exact=False)
    assert len(splits.val) == len(WNIDS)  # one of four per class
    test_x, test_y = _items(splits.test)  # PNG: exact pixels, labels from val_annotations.txt
    assert torch.equal(test_x, _as_float(written.test_x))
    assert test_y.tolist() == written.test_y.tolist()
    _check_augmentation_only_on_train(splits)
    # the parent folder is accepted, and images are resized on request
    resized = load_dataset("tinyimagenet", root=tmp_path, image_size=32, limit=6)
    assert resized.train[0][0].shape == (3, 32, 32) and resized.image_size == 32
    assert len(resized.train) + len(resized.val) == 6


def test_tinyimagenet_bad_annotation(tmp_path: Path) -> None:
    write_tinyimagenet(tmp_path)
    annotations = tmp_path / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + "val_9.png\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(SpecError, match="line 7") as info:
        load_dataset("tinyimagenet", root=tmp_path)
    assert "n99999999" in str(info.value)


LAYOUT_HINTS = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "svhn": "train_32x32.mat",
    "tinyimagenet": "val_annotations.txt",
}


@pytest.mark.parametrize("name", sorted(LAYOUT_HINTS))
def test_missing_root_errors(tmp_path: Path, name: str) -> None:
    with pytest.raises(SpecError, match="root=None") as info:
        load_dataset(name)
    assert info.value.field == "dataset.root" and LAYOUT_HINTS[name] in str(info.value)

    absent = tmp_path / "nowhere"
    with pytest.raises(SpecError, match="does not exist") as info:
        load_dataset(name, root=absent)
    assert str(absent) in str(info.value) and LAYOUT_HINTS[name] in str(info.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpecError, match="missing") as info:
        load_dataset(name, root=empty)
    assert info.value.field == "dataset.root"
    assert str(empty) in str(info.value) and LAYOUT_HINTS[name] in str(info.value)
