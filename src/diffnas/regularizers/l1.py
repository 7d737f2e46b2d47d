"""An l1 penalty on the per-channel architecture scores (RARTS width search on MobileNetV2, Table 6).

``weight * sum |score|`` over every prunable channel pushes scores to zero, so pruning by
a threshold (``width.prune: threshold``) finds its own ratio. Configured as ``reg.l1: WEIGHT``.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from . import Regularizer, register


@register
class L1Scores(Regularizer):
    name = "l1"
    requires = frozenset({"channel-scores"})

    def __init__(self, options, space):
        super().__init__(options, space)
        try:
            self.weight = 1.0 if options is True else float(options)
        except (TypeError, ValueError):
            self.weight = -1.0
        if not self.weight >= 0:
            raise ConfigError(f"reg.l1: weight must be a number >= 0, got {options!r}")

    def penalty(self, method) -> torch.Tensor:
        return self.weight * sum(a.abs().sum() for a in method.relax.alphas.values())
