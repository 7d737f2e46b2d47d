"""DARTS-PRIME's proximity regularization (Maile et al., AAAI 2022, eq. 8).

Adds (c * rho / 2) * ||act(alpha) - Pi_S(act(alpha))|| to the architecture loss for
each cell type, where act is the relaxation's activation (softmax, or clamp for CRB),
Pi_S the space's discretization (the genotype rule as a binary mask, held constant in
the gradient), c = the fraction of the search done (0 -> 1 linearly) and rho = 0.1
for images. The norm is the plain, unsquared Frobenius norm, as in the paper and its
code, so the pull has a constant strength c * rho / 2 whatever the distance.

Options: a number (rho) or ``{rho: 0.1}``.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from . import Regularizer, register


def rho_option(options, name: str, default: float, keys=("rho",)) -> dict:
    """Read ``number | True | {key: value}`` regularizer options."""
    if options is True:
        return {keys[0]: default}
    if isinstance(options, (int, float)):
        return {keys[0]: float(options)}
    if isinstance(options, dict):
        unknown = set(options) - set(keys)
        if unknown:
            raise ConfigError(f"reg.{name}: unknown options {sorted(unknown)}; known: {', '.join(keys)}")
        return {k: float(v) for k, v in options.items()}
    raise ConfigError(f"reg.{name}: expected a number or a mapping, got {options!r}")


@register
class Proximity(Regularizer):
    name = "proximity"
    requires = frozenset({"projection"})

    def __init__(self, options, space):
        super().__init__(options, space)
        self.rho = rho_option(options, self.name, 0.1)["rho"]

    def distance(self, act: torch.Tensor, cell_type: str) -> torch.Tensor:
        """||act - Pi_S(act)||, Pi_S taken on the detached weights."""
        target = self.space.projection(cell_type, act.detach())
        return torch.linalg.vector_norm(act - target)

    def penalty(self, method) -> torch.Tensor:
        c = method.progress
        total = sum(self.distance(method.relax.weights(t), t) for t in self.space.cell_types)
        return (c * self.rho / 2) * total
