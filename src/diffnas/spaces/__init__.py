"""Search spaces: ops, cell topology, genotype rules, and the derived network."""

from .genotype import Genotype, derive_genotype, discrete_mask, genotype_from_masks
from .network import DerivedNetwork
from .ops import OPS
from .space import CELL_TYPES, SPACE_HELP, SPACES, Space, get_space

__all__ = [
    "CELL_TYPES",
    "DerivedNetwork",
    "Genotype",
    "OPS",
    "SPACES",
    "SPACE_HELP",
    "Space",
    "derive_genotype",
    "discrete_mask",
    "genotype_from_masks",
    "get_space",
]
