"""Edge relaxations by name: every ``Relaxation`` subclass with a ``name`` in a module of this package.

A method names its own; ``search.relaxation`` swaps it.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..registry import import_submodules, named_subclasses
from .base import Mixing, Relaxation, SoftmaxRelaxation

import_submodules(__name__)
RELAXATIONS: dict = named_subclasses(Relaxation)


def build_relaxation(name: str, space, cfg=None) -> Relaxation:
    if name not in RELAXATIONS:
        raise ConfigError(f"unknown relaxation '{name}'; choose from {', '.join(RELAXATIONS)}")
    cls = RELAXATIONS[name]
    return cls.from_config(space, cfg) if hasattr(cls, "from_config") else cls(space)


__all__ = ["Mixing", "Relaxation", "SoftmaxRelaxation", "RELAXATIONS", "build_relaxation"]
