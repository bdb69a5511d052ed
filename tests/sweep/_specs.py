"""A tiny, valid sweep spec for the sweep tests (every trial takes a few seconds on 2 cores):
digits at 8x8 (300 images), C=4 with 3 cells, 1 epoch of 2 steps, PGD with 1 step in the
search and small evaluation subsets."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

#: the grid of the acceptance: 2 placements x 2 channel ratios at equal width
GRID = {"placement": ["arnas", "robust-first"], "channel_ratios": [[1, 2, 2], [1, 2, 4]],
        "equal_width": True}
GRID_KEYS = ("arnas_1-2-2_mgda_s2", "arnas_1-2-4_mgda_s2", "robust-first_1-2-2_mgda_s2",
             "robust-first_1-2-4_mgda_s2")


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def tiny_spec(name: str, storage: str | Path, /, **overrides: Any) -> dict[str, Any]:
    """A valid tiny sweep as a plain dict (YAML-ready); ``overrides`` merge into it."""
    base: dict[str, Any] = {
        "name": name,
        "storage": str(storage),
        "dataset": {"name": "digits", "image_size": 8, "limit": 300},
        "search": {"channels": 4, "cells": 3, "epochs": 1, "batch_size": 16, "steps_per_epoch": 2,
                   "eval_samples": 32, "order": "first", "attack": {"kind": "pgd", "steps": 1},
                   "eval_attack_steps": 1},
        "grid": copy.deepcopy(GRID),
        "resources": {"cpu": 1, "gpu": 0},
        "max_concurrent": 2,
        "selection": {"top_k": 2},
        "retrain": {"channels": 4, "cells": 3, "epochs": 1, "batch_size": 32, "steps_per_epoch": 2,
                    "cutout": 0, "val_samples": 32, "auxiliary": False,
                    "attack": {"kind": "pgd", "steps": 1}, "eval_attack": {"kind": "pgd", "steps": 2}},
        "evaluation": {"attacks": ["natural", "fgsm", "pgd20"], "limit": 32},
    }
    return _merge(base, overrides)


def write_spec(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return path
