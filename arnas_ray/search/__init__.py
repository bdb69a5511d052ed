"""The ARNAS multi-objective differentiable search (no Ray needed)."""

from arnas_ray.search.architect import ArchBatch, Architect, ArchStats
from arnas_ray.search.baselines import genotype_params, matched_random_genotypes, random_genotypes
from arnas_ray.search.config import SearchConfig
from arnas_ray.search.loop import build_supernet, run_search
from arnas_ray.search.mgda import mgda_weights, min_norm_2, min_norm_simplex
from arnas_ray.search.result import SearchResult

__all__ = [
    "ArchBatch",
    "ArchStats",
    "Architect",
    "SearchConfig",
    "SearchResult",
    "build_supernet",
    "genotype_params",
    "matched_random_genotypes",
    "mgda_weights",
    "min_norm_2",
    "min_norm_simplex",
    "random_genotypes",
    "run",
    "run_search",
]

run = run_search
