"""The ARNAS multi-objective differentiable search (no Ray needed)."""

from arnas_ray.search.architect import ArchBatch, Architect, ArchStats
from arnas_ray.search.config import SearchConfig
from arnas_ray.search.loop import SearchResult, build_supernet, run_search
from arnas_ray.search.mgda import mgda_weights, min_norm_2, min_norm_simplex

__all__ = [
    "ArchBatch",
    "ArchStats",
    "Architect",
    "SearchConfig",
    "SearchResult",
    "build_supernet",
    "mgda_weights",
    "min_norm_2",
    "min_norm_simplex",
    "run",
    "run_search",
]

run = run_search
