"""``DataSplits``, the ``DATASETS`` registry, ``load_dataset`` and the shared split logic."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from arnas_ray._config import check
from arnas_ray._registry import Registry
from arnas_ray.data._datasets import Augmented, IndexView, labels_of
from arnas_ray.data._transforms import Augment, Cutout, RandomCropPad, RandomHorizontalFlip
from arnas_ray.errors import SpecError

__all__ = [
    "COMMON_ARGS",
    "DATASETS",
    "DataSplits",
    "DatasetFactory",
    "build_augmentation",
    "load_dataset",
    "make_splits",
    "require_root",
    "stratified_holdout",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSplits:
    """The three splits of one data set and what a model needs to know about it.

    Every split yields ``(x, y)``: ``x`` a float32 tensor ``[channels, image_size, image_size]``
    with values in [0, 1] (no normalisation: attack budgets such as eps = 8/255 are in this
    pixel space), ``y`` an ``int`` in ``[0, num_classes)``.

    Attributes:
        name: registry name of the data set.
        train: training items, with train-time augmentation when it was asked for.
        val: items held out of the training data (a seeded, stratified subset), no augmentation.
        test: the data set's test split, no augmentation.
        num_classes: number of classes.
        image_size: side of the (square) images.
        channels: image channels (3 for every built-in data set).
    """

    name: str
    train: Dataset[Any]
    val: Dataset[Any]
    test: Dataset[Any]
    num_classes: int
    image_size: int
    channels: int = 3


#: Builds the splits of one data set. Called with the keyword arguments of
#: :func:`load_dataset` (``root`` as an absolute ``Path`` or ``None``, the rest as given, with
#: ``image_size=None`` meaning the native size) plus any data-set-specific keyword options.
DatasetFactory = Callable[..., DataSplits]

#: Data sets by name. ``DATASETS["nope"]`` raises ``KeyError`` listing the valid names.
DATASETS: Registry[DatasetFactory] = Registry("dataset")

#: Keyword arguments every factory takes; others are data-set-specific options.
COMMON_ARGS = ("root", "image_size", "augment", "cutout", "val_fraction", "seed", "limit")


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    image_size: int | None = None,
    augment: bool = True,
    cutout: int = 0,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    **options: Any,
) -> DataSplits:
    """Load a registered data set as train / val / test splits.

    Args:
        name: one of ``sorted(DATASETS)``: ``cifar10``, ``cifar100``, ``digits``, ``svhn``,
            ``synthetic``, ``tinyimagenet``.
        root: folder holding the files of a data set read from disk (``cifar10``, ``cifar100``,
            ``svhn``, ``tinyimagenet``); ignored by ``digits`` (embedded) and ``synthetic``.
            Nothing is ever downloaded.
        image_size: side of the images returned; ``None`` keeps the data set's default
            (digits 16, synthetic 16, CIFAR and SVHN 32, Tiny-ImageNet 64). Other sizes are
            reached by bilinear resizing.
        augment: apply train-time augmentation (random crop with zero padding, plus a random
            horizontal flip for natural images) to the train split.
        cutout: side of the Cutout square applied to train items, 0 for none. Independent of
            ``augment``.
        val_fraction: fraction of the training data held out as the val split, per class.
        seed: seeds the splits (and the synthetic images); equal seeds give equal splits.
        limit: if given, use at most ``limit`` training items (a seeded random subset, taken
            before the val split, so ``len(train) + len(val) <= limit``) and at most ``limit``
            test items. For quick runs.
        **options: data-set-specific options, e.g. ``num_classes`` for ``synthetic``.

    Returns:
        The splits; see :class:`DataSplits`.

    Raises:
        KeyError: ``name`` is not registered (the message lists the valid names).
        SpecError: an argument is out of range, an option is unknown, or ``root`` is missing or
            lacks the files of the data set (the message names the path and the layout
            expected). Its ``field`` is ``"dataset.<argument>"``.

    Example:
        >>> from arnas_ray.data import load_dataset
        >>> splits = load_dataset("digits", image_size=8, seed=0)
        >>> x, y = splits.train[0]
        >>> tuple(x.shape), splits.num_classes
        ((3, 8, 8), 10)
    """
    factory = DATASETS.get_or_raise(name)
    check(
        image_size is None or image_size >= 1, "dataset.image_size", "image_size >= 1", image_size
    )
    check(cutout >= 0, "dataset.cutout", "cutout >= 0", cutout)
    check(0.0 <= val_fraction < 1.0, "dataset.val_fraction", "0 <= val_fraction < 1", val_fraction)
    check(limit is None or limit >= 1, "dataset.limit", "limit >= 1", limit)
    allowed = sorted(
        p.name
        for p in inspect.signature(factory).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in COMMON_ARGS
    )
    for key, value in options.items():
        if key not in allowed:
            raise SpecError(
                f"dataset.{key}",
                f"unknown option {key}={value!r} for dataset {name!r}; its options: {allowed}",
            )
    root_path = Path(root).expanduser().absolute() if root is not None else None
    splits = factory(
        root=root_path,
        image_size=image_size,
        augment=augment,
        cutout=cutout,
        val_fraction=val_fraction,
        seed=seed,
        limit=limit,
        **options,
    )
    logger.info(
        "dataset %s: train %d, val %d, test %d items; %d classes; %dx%d",
        name,
        len(splits.train),  # type: ignore[arg-type]
        len(splits.val),  # type: ignore[arg-type]
        len(splits.test),  # type: ignore[arg-type]
        splits.num_classes,
        splits.image_size,
        splits.image_size,
    )
    return splits


def require_root(name: str, root: Path | None, layout: str) -> Path:
    """Return ``root`` if it is an existing folder, else raise the one error that explains it.

    Args:
        name: data set name, for the message.
        root: the folder given, or ``None``.
        layout: the files expected under ``root``, for the message.
    """
    if root is None:
        raise SpecError(
            "dataset.root",
            f"dataset {name!r} is read from local files and needs a root folder, but got "
            f"root=None. Put the files there in this layout (nothing is downloaded):\n{layout}",
        )
    if not root.is_dir():
        state = "does not exist" if not root.exists() else "is not a folder"
        raise SpecError(
            "dataset.root",
            f"root folder {str(root)!r} for dataset {name!r} {state}. "
            f"Expected this layout (nothing is downloaded):\n{layout}",
        )
    return root


def stratified_holdout(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..len(labels)-1`` into (kept, held out), holding out ``fraction`` per class.

    Each class holds out ``round(fraction * n_class)`` of its items (half up), chosen by ``rng``.
    Both outputs are sorted.
    """
    held: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        held.append(members[: int(np.floor(fraction * members.size + 0.5))])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(labels.shape[0], dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


def _subsample(indices: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    if limit is None or indices.size <= limit:
        return indices
    return np.sort(rng.choice(indices, size=limit, replace=False))


def build_augmentation(*, augment: bool, padding: int, flip: bool, cutout: int) -> Augment:
    """The train-time augmentation: crop with ``padding`` (and a flip if ``flip``), then cutout."""
    transforms: list[Any] = []
    if augment:
        transforms.append(RandomCropPad(padding))
        if flip:
            transforms.append(RandomHorizontalFlip())
    if cutout > 0:
        transforms.append(Cutout(cutout))
    return Augment(transforms)


def make_splits(
    name: str,
    *,
    source: Dataset[Any],
    pool: np.ndarray,
    test_source: Dataset[Any],
    test_pool: np.ndarray,
    val_fraction: float,
    limit: int | None,
    rng: np.random.Generator,
    augmentation: Augment,
    num_classes: int,
    image_size: int,
) -> DataSplits:
    """Cut train and val out of ``source[pool]`` and test out of ``test_source[test_pool]``.

    Train and val are views of the same un-augmented ``source`` (so the files or tensors are
    loaded once); only the train view is wrapped in ``augmentation``.

    Args:
        name: data set name.
        source: un-augmented training data; must expose ``labels`` (int64 tensor).
        pool: positions in ``source`` available for train and val.
        test_source: un-augmented test data.
        test_pool: positions in ``test_source`` forming the test split.
        val_fraction: fraction of the pool held out per class as val.
        limit: at most this many pool items and test items (seeded subsets), or ``None``.
        rng: draws the subsets.
        augmentation: applied to train items (if it holds any transform).
        num_classes: number of classes.
        image_size: side of the images.
    """
    pool = _subsample(np.asarray(pool, dtype=np.int64), limit, rng)
    test_pool = _subsample(np.asarray(test_pool, dtype=np.int64), limit, rng)
    labels = labels_of(source).numpy()[pool]
    kept, held = stratified_holdout(labels, val_fraction, rng)
    if kept.size == 0:
        raise SpecError(
            "dataset.val_fraction",
            f"no training items left for {name!r}: val_fraction={val_fraction} of "
            f"{pool.size} items (limit={limit}) holds out every item",
        )
    train: Dataset[Any] = IndexView(source, pool[kept])
    if augmentation:
        train = Augmented(train, augmentation)
    return DataSplits(
        name=name,
        train=train,
        val=IndexView(source, pool[held]),
        test=IndexView(test_source, test_pool),
        num_classes=num_classes,
        image_size=image_size,
        channels=3,
    )
