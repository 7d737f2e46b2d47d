"""Search methods by name: every ``SearchMethod`` subclass with a ``name`` in a module of this package."""

from __future__ import annotations

from ..errors import ConfigError, did_you_mean
from ..registry import import_submodules, named_subclasses
from .base import SearchMethod

import_submodules(__name__)
# DARTS first, then the rest by name: the order `diffnas methods` lists them
METHODS: dict[str, type[SearchMethod]] = dict(
    sorted(named_subclasses(SearchMethod).items(), key=lambda kv: (not kv[0].startswith("darts"), kv[0]))
)


def get_method(name: str) -> type[SearchMethod]:
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'{did_you_mean(name, METHODS)}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def build_method(cfg, space, in_channels: int, num_classes: int, device) -> SearchMethod:
    return get_method(cfg.method)(cfg, space, in_channels, num_classes, device)


__all__ = ["METHODS", "SearchMethod", "build_method", "get_method"]
