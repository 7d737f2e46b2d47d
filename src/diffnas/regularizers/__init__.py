"""Regularizers: terms added to the architecture loss (and their own state updates).

Configured as ``reg: {name: weight or options}``; ``build_regularizers`` makes one
object per entry. Each adds ``penalty(method)`` to the architecture loss and may
update its own state in ``after_arch_step(method)`` (ADMM does). A regularizer is a
module of this package whose class is decorated with ``@register``.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, did_you_mean
from ..registry import import_submodules


class Regularizer:
    name = "base"
    requires: frozenset = frozenset()  # capabilities the space must provide (see spaces/base.py)

    def __init__(self, options, space):
        self.options = options
        self.space = space

    def penalty(self, method) -> torch.Tensor:
        raise NotImplementedError

    def after_arch_step(self, method) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


REGULARIZERS: dict = {}


def get_regularizer(name: str) -> type[Regularizer]:
    if name not in REGULARIZERS:
        raise ConfigError(
            f"unknown regularizer '{name}'{did_you_mean(name, REGULARIZERS)}; "
            f"choose from {', '.join(REGULARIZERS) or 'none yet'}"
        )
    return REGULARIZERS[name]


def register(cls):
    REGULARIZERS[cls.name] = cls
    return cls


def build_regularizers(reg_cfg: dict, space) -> list[Regularizer]:
    out = []
    for name, options in (reg_cfg or {}).items():
        cls = get_regularizer(name)
        if options is None or options is False or options == 0:
            continue
        out.append(cls(options, space))
    return out


import_submodules(__name__)
