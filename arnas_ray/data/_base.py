"""``DataSplits``, the ``DATASETS`` registry, ``load_dataset`` and the shared split logic."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
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
    "DataRequest",
    "DataSplits",
    "DatasetFactory",
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


@dataclass(frozen=True)
class DataRequest:
    """What every data set factory is asked for: the arguments all data sets share.

    Validated at construction (errors name the field ``dataset.<name>``, the value and the
    allowed range). ``root`` is kept as an absolute ``Path``.

    Attributes:
        root: folder of a data set read from disk (``None`` for embedded or generated ones).
        image_size: side of the images returned; ``None`` keeps the data set's native size.
        augment: train-time random crop (and flip, for natural images) on the train split.
        cutout: side of the Cutout square on train items, 0 for none.
        val_fraction: fraction of the training data held out as the val split, per class.
        seed: seeds the splits (and generated images).
        limit: at most this many training and this many test items (seeded subsets).

    Example:
        >>> DataRequest(image_size=8).size(16), DataRequest().size(16)
        (8, 16)
    """

    root: Path | None = None
    image_size: int | None = None
    augment: bool = True
    cutout: int = 0
    val_fraction: float = 0.1
    seed: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        check(self.image_size is None or self.image_size >= 1, "dataset.image_size",
              "image_size >= 1", self.image_size)
        check(self.cutout >= 0, "dataset.cutout", "cutout >= 0", self.cutout)
        check(0.0 <= self.val_fraction < 1.0, "dataset.val_fraction", "0 <= val_fraction < 1",
              self.val_fraction)
        check(self.limit is None or self.limit >= 1, "dataset.limit", "limit >= 1", self.limit)
        if self.root is not None:
            object.__setattr__(self, "root", Path(self.root).expanduser().absolute())

    def size(self, native: int) -> int:
        """The image side to return: ``image_size``, or the data set's ``native`` one."""
        return self.image_size if self.image_size is not None else native

    def rng(self) -> np.random.Generator:
        """A fresh generator of the splits, seeded with ``seed``."""
        return np.random.default_rng(self.seed)

    def augmentation(self, *, padding: int, flip: bool) -> Augment:
        """The train-time augmentation: crop with ``padding`` (and a flip if ``flip``), then cutout."""
        transforms: list[Any] = []
        if self.augment:
            transforms.append(RandomCropPad(padding))
            if flip:
                transforms.append(RandomHorizontalFlip())
        if self.cutout > 0:
            transforms.append(Cutout(self.cutout))
        return Augment(transforms)

    def as_kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments (for factories written for the keyword form)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: Builds the splits of one data set: ``factory(request, **options)`` with the
#: :class:`DataRequest` and the data-set-specific keyword options it declares (keyword-only
#: parameters). A factory without a ``request`` parameter is called the older way, with the
#: request's fields as keyword arguments.
DatasetFactory = Callable[..., DataSplits]

#: Data sets by name. ``DATASETS["nope"]`` raises ``KeyError`` listing the valid names.
DATASETS: Registry[DatasetFactory] = Registry("dataset")

#: Keyword arguments every data set takes (the fields of :class:`DataRequest`).
COMMON_ARGS: tuple[str, ...] = tuple(f.name for f in fields(DataRequest))


def _options(name: str, factory: DatasetFactory, options: dict[str, Any]) -> None:
    """Refuse options the factory does not declare, naming the ones it has."""
    allowed = sorted(
        p.name for p in inspect.signature(factory).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in COMMON_ARGS
    )
    for key, value in options.items():
        if key not in allowed:
            raise SpecError(f"dataset.{key}",
                            f"unknown option {key}={value!r} for dataset {name!r}; its options: "
                            f"{allowed}")


def load_dataset(name: str, *, root: str | Path | None = None, image_size: int | None = None,
                 augment: bool = True, cutout: int = 0, val_fraction: float = 0.1, seed: int = 0,
                 limit: int | None = None, **options: Any) -> DataSplits:
    """Load a registered data set as train / val / test splits.

    Args:
        name: one of ``sorted(DATASETS)``: ``cifar10``, ``cifar100``, ``digits``, ``svhn``,
            ``synthetic``, ``tinyimagenet``.
        root, image_size, augment, cutout, val_fraction, seed, limit: the
            :class:`DataRequest` (see its attributes). ``root`` is read by ``cifar10``,
            ``cifar100``, ``svhn`` and ``tinyimagenet`` (nothing is ever downloaded); the
            native sizes are digits 16, synthetic 16, CIFAR and SVHN 32, Tiny-ImageNet 64;
            ``limit`` subsets are taken before the val split, so
            ``len(train) + len(val) <= limit``.
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
    request = DataRequest(root=None if root is None else Path(root), image_size=image_size,
                          augment=augment, cutout=cutout, val_fraction=val_fraction, seed=seed,
                          limit=limit)
    _options(name, factory, options)
    if "request" in inspect.signature(factory).parameters:
        splits = factory(request, **options)
    else:  # a factory written for the keyword form (user code)
        splits = factory(**request.as_kwargs(), **options)
    logger.info("dataset %s: train %d, val %d, test %d items; %d classes; %dx%d", name,
                len(splits.train), len(splits.val), len(splits.test),  # type: ignore[arg-type]
                splits.num_classes, splits.image_size, splits.image_size)
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


def make_splits(
    name: str,
    request: DataRequest,
    *,
    source: Dataset[Any],
    pool: np.ndarray,
    test_source: Dataset[Any],
    test_pool: np.ndarray,
    num_classes: int,
    image_size: int,
    padding: int,
    flip: bool,
    rng: np.random.Generator | None = None,
) -> DataSplits:
    """Cut train and val out of ``source[pool]`` and test out of ``test_source[test_pool]``.

    Train and val are views of the same un-augmented ``source`` (so the files or tensors are
    loaded once); only the train view is wrapped in the request's augmentation.

    Args:
        name: data set name.
        request: val fraction, limit and augmentation settings.
        source: un-augmented training data; must expose ``labels`` (int64 tensor).
        pool: positions in ``source`` available for train and val.
        test_source: un-augmented test data.
        test_pool: positions in ``test_source`` forming the test split.
        num_classes: number of classes. image_size: side of the images.
        padding, flip: the random crop's zero padding, and whether a flip follows it.
        rng: draws the subsets (``request.rng()`` by default).
    """
    rng = request.rng() if rng is None else rng
    limit, val_fraction = request.limit, request.val_fraction
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
    augmentation = request.augmentation(padding=padding, flip=flip)
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
