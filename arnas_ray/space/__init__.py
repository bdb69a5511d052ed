"""The ARNAS search space: ops, layouts, genotypes, supernet, discrete network, cost."""

from arnas_ray.space._groups import block_params, reused_reps
from arnas_ray.space.cost import count_macs, count_params
from arnas_ray.space.genotype import GENOTYPES, CellGenotype, Genotype, derive_genotype
from arnas_ray.space.layout import LAYOUT_PRESETS, REDUCE, CellPlan, Layout, Stage
from arnas_ray.space.network import Network
from arnas_ray.space.ops import DARTS_PRIMITIVES, OPS, PRIMITIVES, MixedOp, get_op
from arnas_ray.space.supernet import Supernet

__all__ = [
    "DARTS_PRIMITIVES",
    "GENOTYPES",
    "LAYOUT_PRESETS",
    "OPS",
    "PRIMITIVES",
    "REDUCE",
    "CellGenotype",
    "CellPlan",
    "Genotype",
    "Layout",
    "MixedOp",
    "Network",
    "Stage",
    "Supernet",
    "block_params",
    "count_macs",
    "count_params",
    "derive_genotype",
    "get_op",
    "reused_reps",
]
