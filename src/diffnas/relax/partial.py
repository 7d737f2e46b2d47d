"""PC-DARTS (Xu et al., ICLR 2020): partial channel connections and edge normalization.

Partial channels: each mixed edge runs its ops on only the first C/K channels of its
input; the other channels bypass the ops (max-pooled 2x2 on a reduction edge), and the
concatenation is channel-shuffled with K groups (``MixedEdge`` in the supernet does
this when ``partial_channels`` = K > 1).

Edge normalization: one extra parameter beta per edge and cell type; a node sums its
incoming edges weighted by softmax(beta over that node's incoming edges). The genotype
rule ranks softmax(alpha)[e] * softmax_node(beta)[e].
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..spaces.space import CELL_TYPES, Space
from .base import Mixing, Relaxation


class PartialChannelRelaxation(Relaxation):
    """softmax(alpha) over each edge's ops on C/K channels, softmax(beta) over each node's edges."""

    name = "partial-channels"
    partial_channels = 4  # PC-DARTS's K

    def __init__(self, space: Space, init_scale: float = 1e-3, k: int = 4):
        super().__init__(space, init_scale)
        self.partial_channels = int(k)
        if self.partial_channels < 1:
            raise ValueError(f"partial_channels K must be >= 1, got {k}")
        self.betas = nn.ParameterDict({t: nn.Parameter(init_scale * torch.randn(space.num_edges)) for t in CELL_TYPES})

    @classmethod
    def from_config(cls, space: Space, cfg=None) -> PartialChannelRelaxation:
        k = 4
        if cfg is not None:
            k = cfg.search.get("pc_k", 4)
            if not isinstance(k, int) or k < 1 or cfg.search.channels % k:
                raise ConfigError(f"search.pc_k must be a positive integer dividing search.channels, got {k!r}")
        return cls(space, k=k)

    def edge_weights(self, cell_type: str) -> torch.Tensor:
        """[E]: softmax of beta over the incoming edges of each node (edge normalization)."""
        beta = self.betas[cell_type]
        return torch.cat([F.softmax(beta[self.space.node_edges(n)], dim=0) for n in range(self.space.nodes)])

    def mixing(self, cell_type: str, cell_index: int) -> Mixing:
        return Mixing(self.weights(cell_type), self._computed_ops[cell_type], self.edge_weights(cell_type))

    def genotype_weights(self) -> dict:
        with torch.no_grad():
            return {t: (self.weights(t) * self.edge_weights(t)[:, None]).detach() for t in CELL_TYPES}
