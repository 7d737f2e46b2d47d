"""NASP's model-size regularizer, eq. (8): R(A) = sum_k (p_k / p_bar) ||column k of A||^2.

p_k is the parameter count of op k built at the search's channel width
(``search.channels``, stride 1, search-time BN without affine parameters), p_bar the
sum over the cell type's ops. The penalty added to the architecture loss is
``eta * R(A)`` with ``eta`` the configured weight.

Configured as ``reg.size: ETA`` (normal cells only, as in the authors' code) or
``reg.size: {weight: ETA, cells: [normal, reduce]}``. ``A`` is what the relaxation calls
``penalty_weights`` when it has them (NASP's discrete relaxation: the discrete
architecture A_bar, straight-through to the continuous alphas, as in Algorithm 2 and the
authors' code, where the loss is evaluated on the binarized alphas), else its op weights
(``softmax(alpha)`` for DARTS).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from . import Regularizer, register


@register
class SizeRegularizer(Regularizer):
    name = "size"
    requires = frozenset({"op-params"})

    def __init__(self, options, space):
        super().__init__(options, space)
        cells = ["normal"]
        if isinstance(options, dict):
            unknown = set(options) - {"weight", "cells"}
            if unknown:
                raise ConfigError(f"reg.size: unknown options {sorted(unknown)}; expected weight, cells")
            weight = options.get("weight", 1.0)
            cells = options.get("cells", cells)
            cells = [cells] if isinstance(cells, str) else list(cells)
        elif options is True:
            weight = 1.0
        else:
            weight = options
        try:
            self.weight = float(weight)
        except (TypeError, ValueError):
            raise ConfigError(f"reg.size: weight must be a number, got {weight!r}") from None
        if self.weight < 0:
            raise ConfigError(f"reg.size: weight must be >= 0, got {self.weight}")
        bad = [c for c in cells if c not in space.cell_types]
        if bad or not cells:
            raise ConfigError(f"reg.size: cells must be a subset of {list(space.cell_types)}, got {cells}")
        self.cells = cells
        self._costs: dict = {}

    def costs(self, cell_type: str, channels: int) -> torch.Tensor:
        """p_k / p_bar for each op of the cell type (all zero if no op has parameters)."""
        key = (cell_type, channels)
        if key not in self._costs:
            p = torch.tensor([float(self.space.op_params(o, channels)) for o in self.space.ops[cell_type]])
            self._costs[key] = p / p.sum() if p.sum() > 0 else p
        return self._costs[key]

    def value(self, relax, channels: int) -> torch.Tensor:
        """R(A) summed over the covered cell types."""
        read = getattr(relax, "penalty_weights", relax.weights)
        total = 0.0
        for t in self.cells:
            a = read(t)
            total = total + (self.costs(t, channels).to(a) * (a * a).sum(0)).sum()
        return total

    def penalty(self, method) -> torch.Tensor:
        return self.weight * self.value(method.relax, method.cfg.search.channels)
