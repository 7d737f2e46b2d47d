"""Search spaces by name: every ``SearchSpace`` subclass with a ``name`` in a module or package of this one.

A space is a plug-in (``spaces/base.py`` says what it owns). The DARTS CNN cell spaces
live in ``spaces/darts/``; their everyday names are re-exported here.
"""

from __future__ import annotations

from ..errors import ConfigError, GenotypeError, did_you_mean
from ..registry import import_submodules, named_subclasses
from .base import CAPABILITIES, Architecture, Mixing, SearchSpace, architecture_path, read_json
from .darts.genotype import Genotype, derive_genotype, discrete_mask, genotype_from_masks
from .darts.network import DerivedNetwork
from .darts.ops import OPS
from .darts.space import CELL_TYPES, Space

import_submodules(__name__)
SPACES: dict[str, type[SearchSpace]] = named_subclasses(SearchSpace)


def get_space_class(name: str) -> type[SearchSpace]:
    if name not in SPACES:
        raise ConfigError(f"unknown space '{name}'{did_you_mean(name, SPACES)}; choose from {', '.join(SPACES)}")
    return SPACES[name]


def get_space(name: str, nodes: int | None = None) -> SearchSpace:
    """The space ``name`` with its default options (``nodes``: a DARTS cell space's intermediate nodes)."""
    cls = get_space_class(name)
    return cls(nodes=nodes) if nodes else cls()


def space_from_config(cfg) -> SearchSpace:
    return get_space_class(cfg.space).from_config(cfg)


def load_architecture(path) -> Architecture:
    """A genotype file (or a run directory's: ``architecture_path``) read by the space it names."""
    d, source = read_json(path)
    name = d.get("space")
    if name not in SPACES:
        raise GenotypeError(f"{source}: unknown space {name!r}; expected one of {', '.join(SPACES)}")
    cls = SPACES[name]
    nodes = d.get("nodes") if isinstance(d.get("nodes"), int) else None
    try:
        space = cls(nodes=nodes) if nodes else cls()
    except (ConfigError, TypeError) as e:
        raise GenotypeError(f"{source}: {e}") from None
    return space.parse(d, source)


__all__ = [
    "CAPABILITIES",
    "CELL_TYPES",
    "SPACES",
    "Architecture",
    "DerivedNetwork",
    "Genotype",
    "Mixing",
    "OPS",
    "SearchSpace",
    "Space",
    "architecture_path",
    "derive_genotype",
    "discrete_mask",
    "genotype_from_masks",
    "get_space",
    "get_space_class",
    "load_architecture",
    "space_from_config",
]
