"""Edge relaxations: how the architecture parameters turn into the mixing of each edge's ops.

A relaxation owns the architecture parameters (so they are checkpointed with the
supernet) and answers, for every cell, a ``Mixing``: the weight of each op on each
edge, which ops to compute at all, and optionally a weight per edge. Ops left out of
``active`` are never run: that is where single-path and pruning methods save time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..spaces.genotype import Genotype, derive_genotype
from ..spaces.space import CELL_TYPES, Space


@dataclass
class Mixing:
    weights: torch.Tensor  # [E, O]: output of edge e = sum over active o of weights[e, o] * op_o(x)
    active: list  # per edge, the op indices to compute
    edge_weights: torch.Tensor | None = None  # [E]: scales each edge's output in its node's sum


class Relaxation(nn.Module):
    """Base: one alpha tensor [E, O] per cell type, the softmax mixture of all non-`none` ops."""

    # supernet construction hints read once when the supernet is built
    partial_channels = 1  # PC-DARTS's K: only C/K channels go through the ops
    node_norm = False  # DARTS-PRIME's CRB: non-affine BN after each node's sum
    arch_weight_decay = None  # None: search.a_wd; DARTS-PRIME's CRB turns alpha's weight decay off (0.0)

    def __init__(self, space: Space, init_scale: float = 1e-3):
        super().__init__()
        self.space = space
        self.alphas = nn.ParameterDict(
            {t: nn.Parameter(self.init_alpha(space.num_edges, len(space.ops[t]), init_scale)) for t in CELL_TYPES}
        )
        # ops worth computing: `none` contributes exactly zero
        self._computed_ops = {
            t: [[o for o, name in enumerate(space.ops[t]) if name != "none"] for _ in range(space.num_edges)]
            for t in CELL_TYPES
        }

    def init_alpha(self, edges: int, ops: int, scale: float) -> torch.Tensor:
        return scale * torch.randn(edges, ops)

    def activation(self, alpha: torch.Tensor) -> torch.Tensor:
        """act(alpha): the continuous op weights (softmax for DARTS, clamp for CRB)."""
        return F.softmax(alpha, dim=-1)

    def weights(self, cell_type: str) -> torch.Tensor:
        return self.activation(self.alphas[cell_type])

    def mixing(self, cell_type: str, cell_index: int) -> Mixing:
        return Mixing(self.weights(cell_type), self._computed_ops[cell_type])

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def genotype_weights(self) -> dict:
        """The [E, O] weights the genotype rule ranks."""
        with torch.no_grad():
            return {t: self.weights(t).detach() for t in CELL_TYPES}

    def genotype(self) -> Genotype:
        return derive_genotype(self.space, self.genotype_weights())

    # hooks a relaxation with state (sampling, pruning, sign flips) may use
    def epoch_start(self, epoch: int) -> None:
        pass

    def step_start(self) -> None:
        pass

    def record(self) -> dict:
        """Per-step facts worth logging (e.g. which edge was relaxed)."""
        return {}


class SoftmaxRelaxation(Relaxation):
    """DARTS: softmax(alpha) over each edge's ops."""

    name = "softmax"
