"""arnas-ray: accurate and robust neural architecture search (ARNAS) on Ray Tune.

The top level keeps a small, lazily imported surface (importing ``arnas_ray`` loads neither
torch nor ray); everything else lives in the subpackages ``space``, ``data``, ``attacks``,
``search``, ``train``, ``results`` and ``sweep``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ArnasError": "arnas_ray.errors",
    "SpecError": "arnas_ray.errors",
    "Genotype": "arnas_ray.space",
    "Layout": "arnas_ray.space",
    "Supernet": "arnas_ray.space",
    "Network": "arnas_ray.space",
    "SearchConfig": "arnas_ray.search",
    "run_search": "arnas_ray.search",
    "RetrainConfig": "arnas_ray.train",
    "load_dataset": "arnas_ray.data",
    "SweepSpec": "arnas_ray.sweep",
    "run_sweep": "arnas_ray.sweep",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'arnas_ray' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
