"""Edge relaxations by name; a method names its own, ``search.relaxation`` swaps it."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Mixing, Relaxation, SoftmaxRelaxation

RELAXATIONS: dict = {
    "softmax": SoftmaxRelaxation,
}


def build_relaxation(name: str, space, cfg=None) -> Relaxation:
    if name not in RELAXATIONS:
        raise ConfigError(f"unknown relaxation '{name}'; choose from {', '.join(RELAXATIONS)}")
    cls = RELAXATIONS[name]
    return cls.from_config(space, cfg) if hasattr(cls, "from_config") else cls(space)


__all__ = ["Mixing", "Relaxation", "SoftmaxRelaxation", "RELAXATIONS", "build_relaxation"]
