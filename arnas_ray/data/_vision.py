"""Natural-image data sets read from a local ``root``: CIFAR-10, CIFAR-100, SVHN, Tiny-ImageNet.

Nothing is downloaded (a sweep on a cluster must not race to fetch archives); the error for a
missing or incomplete ``root`` names the path and the layout to put there. CIFAR and SVHN are
read by torchvision's own classes (``download=False``), which also verify the official md5
sums, and kept in memory as one uint8 tensor; Tiny-ImageNet (100,000 JPEGs) is decoded per item.

Augmentation follows the reference: ``RandomCrop(size, padding=4)`` at the native size (the
padding scales with ``image_size`` when resized), ``RandomHorizontalFlip()`` (not for SVHN,
whose digits a mirror changes), optional ``Cutout(length)``, pixels in [0, 1] and no
normalisation. The val split is a seeded, stratified ``val_fraction`` of the training files,
read without augmentation.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arnas_ray.data._base import DATASETS, DataRequest, DataSplits, make_splits, require_root
from arnas_ray.data._datasets import FileImages, TensorImages
from arnas_ray.errors import SpecError

__all__ = ["CIFAR10_LAYOUT", "CIFAR100_LAYOUT", "SVHN_LAYOUT", "TINYIMAGENET_LAYOUT"]

_REFERENCE_PADDING = 4  # RandomCrop(size, padding=4) at the native size

CIFAR10_LAYOUT = (
    "  <root>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta\n"
    "(the extracted 'CIFAR-10 python version', cifar-10-python.tar.gz, from "
    "https://www.cs.toronto.edu/~kriz/cifar.html)"
)
CIFAR100_LAYOUT = (
    "  <root>/cifar-100-python/train, test, meta\n"
    "(the extracted 'CIFAR-100 python version', cifar-100-python.tar.gz, from "
    "https://www.cs.toronto.edu/~kriz/cifar.html)"
)
SVHN_LAYOUT = (
    "  <root>/train_32x32.mat, <root>/test_32x32.mat\n"
    "(SVHN 'Format 2: cropped digits' from http://ufldl.stanford.edu/housenumbers/)"
)
TINYIMAGENET_LAYOUT = (
    "  <root>/train/<wnid>/images/*.JPEG   (one folder per class, e.g. n01443537)\n"
    "  <root>/val/images/*.JPEG\n"
    "  <root>/val/val_annotations.txt      (tab-separated lines: file, wnid, box)\n"
    "(the extracted tiny-imagenet-200.zip from http://cs231n.stanford.edu/tiny-imagenet-200.zip;"
    " <root> is its tiny-imagenet-200 folder)"
)

_READ_ERRORS = (RuntimeError, OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError)


def _padding(size: int, native: int) -> int:
    return max(1, round(_REFERENCE_PADDING * size / native))


def _unreadable(name: str, where: Path, layout: str, exc: Exception) -> SpecError:
    return SpecError(
        "dataset.root",
        f"the {name} files under {str(where)!r} cannot be read: {type(exc).__name__}: {exc}. "
        f"They must be the official release (torchvision checks their md5 sums) in this "
        f"layout:\n{layout}",
    )


def _missing(name: str, where: Path, missing: list[str], layout: str) -> SpecError:
    return SpecError(
        "dataset.root",
        f"{name} files missing under {str(where)!r}: {missing}. Expected this layout (nothing "
        f"is downloaded):\n{layout}",
    )


def _nested(root: Path, folder: str) -> Path:
    """Accept the data set's own folder as ``root`` too (``.../cifar-10-batches-py``)."""
    if not (root / folder).is_dir() and root.name == folder:
        return root.parent
    return root


def _load_cifar(name: str, cls: Any, layout: str, request: DataRequest) -> DataSplits:
    root = _nested(require_root(name, request.root, layout), cls.base_folder)
    folder = root / cls.base_folder
    files = [f for f, _ in cls.train_list + cls.test_list] + [str(cls.meta["filename"])]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise _missing(name, folder, missing, layout)
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except _READ_ERRORS as exc:
        raise _unreadable(name, folder, layout, exc) from exc
    size = request.size(32)
    return make_splits(name, request, source=_tensor_images(train.data, train.targets, size),
                       pool=np.arange(len(train)),
                       test_source=_tensor_images(test.data, test.targets, size),
                       test_pool=np.arange(len(test)), num_classes=len(train.classes),
                       image_size=size, padding=_padding(size, 32), flip=True)


def _tensor_images(data_nhwc: np.ndarray, labels: object, size: int) -> TensorImages:
    images = torch.from_numpy(np.ascontiguousarray(data_nhwc)).permute(0, 3, 1, 2)  # [N, 3, H, W]
    return TensorImages(
        images.contiguous(), torch.as_tensor(np.asarray(labels, dtype=np.int64)), size
    )


@DATASETS.register("cifar10")
def _cifar10(request: DataRequest) -> DataSplits:
    """CIFAR-10 (50,000 train, 10,000 test, 32x32) from ``<root>/cifar-10-batches-py``."""
    from torchvision.datasets import CIFAR10  # lazy: slow to import

    return _load_cifar("cifar10", CIFAR10, CIFAR10_LAYOUT, request)


@DATASETS.register("cifar100")
def _cifar100(request: DataRequest) -> DataSplits:
    """CIFAR-100 fine labels (50,000 train, 10,000 test, 32x32) from ``<root>/cifar-100-python``."""
    from torchvision.datasets import CIFAR100  # lazy: slow to import

    return _load_cifar("cifar100", CIFAR100, CIFAR100_LAYOUT, request)


@DATASETS.register("svhn")
def _svhn(request: DataRequest) -> DataSplits:
    """SVHN cropped digits (73,257 train, 26,032 test, 32x32; label 10 read as 0).

    The ``extra`` split is not used. Augmentation is the reference's crop (and cutout) but
    without the horizontal flip: as for ``digits``, a mirrored house number is a different
    or no digit, so flipping would train on wrong labels.
    """
    from torchvision.datasets import SVHN  # lazy: slow to import

    name = "svhn"
    root = require_root(name, request.root, SVHN_LAYOUT)
    missing = [
        SVHN.split_list[s][1]
        for s in ("train", "test")
        if not (root / SVHN.split_list[s][1]).is_file()
    ]
    if missing:
        raise _missing(name, root, missing, SVHN_LAYOUT)
    try:
        train = SVHN(str(root), split="train", download=False)
        test = SVHN(str(root), split="test", download=False)
    except _READ_ERRORS as exc:
        raise _unreadable(name, root, SVHN_LAYOUT, exc) from exc
    size = request.size(32)
    sources = []
    for part in (train, test):
        images = torch.from_numpy(np.ascontiguousarray(part.data))  # uint8 [N, 3, 32, 32]
        sources.append(TensorImages(images, torch.as_tensor(part.labels, dtype=torch.int64), size))
    return make_splits(name, request, source=sources[0], pool=np.arange(len(train)),
                       test_source=sources[1], test_pool=np.arange(len(test)), num_classes=10,
                       image_size=size, padding=_padding(size, 32), flip=False)


def _tiny_val_samples(root: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """Read ``val/val_annotations.txt`` into ``(path, label)`` pairs for the test split."""
    annotations = root / "val" / "val_annotations.txt"
    samples: list[tuple[str, int]] = []
    with annotations.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 2 or fields[1] not in class_to_idx:
                raise SpecError(
                    "dataset.root",
                    f"{str(annotations)!r} line {lineno}: expected 'file<TAB>wnid<TAB>...' with "
                    f"a wnid that has a train folder, got {line.strip()!r}",
                )
            path = root / "val" / "images" / fields[0]
            if not path.is_file():
                raise SpecError(
                    "dataset.root",
                    f"{str(annotations)!r} line {lineno} names {fields[0]!r}, but "
                    f"{str(path)!r} does not exist",
                )
            samples.append((str(path), class_to_idx[fields[1]]))
    if not samples:
        raise SpecError("dataset.root", f"{str(annotations)!r} lists no images")
    return samples


@DATASETS.register("tinyimagenet")
def _tinyimagenet(request: DataRequest) -> DataSplits:
    """Tiny-ImageNet (200 classes, 100,000 train, 64x64); its labelled ``val`` folder is the test split.

    Classes are the ``train/`` sub-folders in sorted order (``ImageFolder``'s rule); the
    number of classes is however many there are. Images are decoded when read.
    """
    from torchvision.datasets import ImageFolder  # lazy: slow to import

    name = "tinyimagenet"
    root = require_root(name, request.root, TINYIMAGENET_LAYOUT)
    if not (root / "train").is_dir() and (root / "tiny-imagenet-200").is_dir():
        root = root / "tiny-imagenet-200"  # the folder the archive extracts into
    expected = ["train", "val/images", "val/val_annotations.txt"]
    missing = [p for p in expected if not (root / p).exists()]
    if missing:
        raise _missing(name, root, missing, TINYIMAGENET_LAYOUT)
    try:
        folder = ImageFolder(str(root / "train"))
    except (FileNotFoundError, OSError) as exc:
        raise _unreadable(name, root / "train", TINYIMAGENET_LAYOUT, exc) from exc
    test_samples = _tiny_val_samples(root, folder.class_to_idx)
    size = request.size(64)
    return make_splits(name, request, source=FileImages(folder.samples, size),
                       pool=np.arange(len(folder.samples)),
                       test_source=FileImages(test_samples, size),
                       test_pool=np.arange(len(test_samples)), num_classes=len(folder.classes),
                       image_size=size, padding=_padding(size, 64), flip=True)
