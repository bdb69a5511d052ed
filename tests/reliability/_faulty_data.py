"""A user-registered data set with per-trial faults, for the Ray fault tests (issue 9, item 4).

It stands for user-supplied data code: the data set ``faulty`` reads files from its ``root`` and
behaves by the trial's seed (the grid varies the seed, so one sweep holds every fault):

- ``seed == SEED_OK`` (and any other): synthetic patterns, a healthy trial;
- ``seed == SEED_CORRUPT``: decodes ``ROOT/train.npz``, which the test fills with garbage
  (a root that exists, so the spec validates, but whose file is corrupt): ``np.load`` raises;
- ``seed == SEED_OOM``: decodes the images at an impossible resolution, so torch's allocator
  raises "can't allocate memory" (a simulated out-of-memory; nothing is really allocated).

Ray workers register it through ``worker_process_setup_hook`` (``register``); the driver
registers it on import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from arnas_ray.data import DATASETS, DataSplits, load_dataset

NAME = "faulty"
SEED_OK, SEED_CORRUPT, SEED_OOM, SEED_DIVERGE = 2, 3, 4, 5


def _faulty(*, root: Path | None, image_size: int | None, augment: bool, cutout: int,
            val_fraction: float, seed: int, limit: int | None) -> DataSplits:
    if seed == SEED_CORRUPT:
        assert root is not None
        with np.load(root / "train.npz", allow_pickle=False) as data:  # raises on a corrupt file
            _ = data["x"]
    if seed == SEED_OOM:
        n = limit or 512
        # 2**15 x 2**15 RGB float32 images: terabytes; the allocator refuses at once
        torch.empty((n, 3, 2**15, 2**15), dtype=torch.float32)
    return load_dataset("synthetic", image_size=image_size, augment=augment, cutout=cutout,
                        val_fraction=val_fraction, seed=seed, limit=limit, num_train=128,
                        num_test=64)


def register() -> None:
    """Register ``faulty`` (idempotent); the Ray worker setup hook."""
    if NAME not in DATASETS:
        DATASETS.add(NAME, _faulty)


register()
