"""Tiny copies of each on-disk data set format, written by the tests under tmp_path."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Written:
    """What a fixture wrote: the root and the raw arrays, in file order."""

    root: Path
    train_x: np.ndarray  # uint8 [N, 3, H, W]
    train_y: np.ndarray  # int64 [N]
    test_x: np.ndarray
    test_y: np.ndarray


def _images(rng: np.random.Generator, n: int, size: int = 32) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)  # [N, 3, H, W]


def _dump(path: Path, obj: object) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar(root: Path, *, hundred: bool, per_class: int = 3, n_test: int = 12) -> Written:
    """CIFAR python pickles with the keys torchvision reads (and the rest of the real ones)."""
    rng = np.random.default_rng(1)
    k = 100 if hundred else 10
    n_train = k * per_class
    train_x, test_x = _images(rng, n_train), _images(rng, n_test)
    train_y = rng.permutation(np.arange(n_train) % k).astype(np.int64)
    test_y = (np.arange(n_test) % k).astype(np.int64)

    def batch(x: np.ndarray, y: np.ndarray, label: str) -> dict[str, object]:
        flat = x.reshape(len(x), 3 * 32 * 32)  # rows: 1024 red, 1024 green, 1024 blue
        names = [f"img_{i}.png" for i in range(len(x))]
        if hundred:
            coarse = (y // 5).tolist()
            return {
                "filenames": names,
                "batch_label": label,
                "fine_labels": y.tolist(),
                "coarse_labels": coarse,
                "data": flat,
            }
        return {"batch_label": label, "labels": y.tolist(), "data": flat, "filenames": names}

    if hundred:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        _dump(folder / "train", batch(train_x, train_y, "training batch 1 of 1"))
        _dump(folder / "test", batch(test_x, test_y, "testing batch 1 of 1"))
        _dump(
            folder / "meta",
            {
                "fine_label_names": [f"fine{i}" for i in range(100)],
                "coarse_label_names": [f"coarse{i}" for i in range(20)],
            },
        )
    else:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
            _dump(folder / f"data_batch_{i}", batch(train_x[part], train_y[part], f"batch {i}"))
        _dump(folder / "test_batch", batch(test_x, test_y, "testing batch 1 of 1"))
        _dump(
            folder / "batches.meta",
            {
                "label_names": [f"class{i}" for i in range(10)],
                "num_cases_per_batch": n_train // 5,
                "num_vis": 3072,
            },
        )
    return Written(root, train_x, train_y, test_x, test_y)


def write_svhn(root: Path, *, per_class: int = 3, n_test: int = 10) -> Written:
    """SVHN .mat files: X uint8 [32, 32, 3, N], y uint8 [N, 1] with 10 meaning digit 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for name, n in (("train_32x32.mat", 10 * per_class), ("test_32x32.mat", n_test)):
        x = _images(rng, n)
        digits = rng.permutation(np.arange(n) % 10)
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        savemat(root / name, {"X": np.ascontiguousarray(x.transpose(2, 3, 1, 0)), "y": y})
        out += [x, digits.astype(np.int64)]
    return Written(root, *out)


WNIDS = ("n01443537", "n01629819", "n01641577")


def write_tinyimagenet(root: Path, *, per_class: int = 4, n_val: int = 6) -> Written:
    """Tiny-ImageNet folders: train/<wnid>/images/*.JPEG, val/images + val_annotations.txt.

    Train images are JPEG as in the real set; val images are PNG so that pixels compare exactly.
    """
    rng = np.random.default_rng(3)
    train_x, train_y = [], []
    for label, wnid in enumerate(WNIDS):
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(per_class):
            x = _images(rng, 1, 64)[0]
            Image.fromarray(x.transpose(1, 2, 0)).save(folder / f"{wnid}_{i}.JPEG", quality=95)
            train_x.append(x)
            train_y.append(label)
    (root / "val" / "images").mkdir(parents=True)
    lines, test_x, test_y = [], [], []
    for i in range(n_val):
        label = i % len(WNIDS)
        x = _images(rng, 1, 64)[0]
        Image.fromarray(x.transpose(1, 2, 0)).save(root / "val" / "images" / f"val_{i}.png")
        lines.append(f"val_{i}.png\t{WNIDS[label]}\t0\t0\t63\t63\n")
        test_x.append(x)
        test_y.append(label)
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    return Written(root, np.stack(train_x), np.array(train_y), np.stack(test_x), np.array(test_y))
