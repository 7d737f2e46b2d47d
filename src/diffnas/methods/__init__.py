"""Search methods by name. A new method is a ``SearchMethod`` subclass listed here."""

from __future__ import annotations

from ..errors import ConfigError
from .base import SearchMethod
from .darts import DARTS, DARTS2

METHODS: dict[str, type[SearchMethod]] = {cls.name: cls for cls in (DARTS, DARTS2)}


def get_method(name: str) -> type[SearchMethod]:
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'; choose from {', '.join(METHODS)}")
    return METHODS[name]


def build_method(cfg, space, in_channels: int, num_classes: int, device) -> SearchMethod:
    return get_method(cfg.method)(cfg, space, in_channels, num_classes, device)


__all__ = ["METHODS", "SearchMethod", "build_method", "get_method"]
