"""Edge relaxations by name: every ``Relaxation`` subclass with a ``name`` in a module of this package.

A method names its own; ``search.relaxation`` swaps it.
"""

from __future__ import annotations

from ..errors import ConfigError, did_you_mean
from ..registry import import_submodules, named_subclasses
from ..spaces import Mixing
from .base import Relaxation, SoftmaxRelaxation

import_submodules(__name__)
RELAXATIONS: dict = named_subclasses(Relaxation)


def get_relaxation(name: str) -> type[Relaxation]:
    if name not in RELAXATIONS:
        raise ConfigError(
            f"unknown relaxation '{name}'{did_you_mean(name, RELAXATIONS)}; choose from {', '.join(RELAXATIONS)}"
        )
    return RELAXATIONS[name]


def build_relaxation(name: str, space, cfg=None) -> Relaxation:
    return get_relaxation(name).from_config(space, cfg)


__all__ = ["Mixing", "Relaxation", "SoftmaxRelaxation", "RELAXATIONS", "build_relaxation", "get_relaxation"]
