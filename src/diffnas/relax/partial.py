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
from ..spaces import Mixing, SearchSpace
from .base import Relaxation


class PartialChannelRelaxation(Relaxation):
    """softmax(alpha) over each edge's ops on C/K channels, softmax(beta) over each node's edges."""

    name = "partial-channels"
    options = {"k": 4}  # PC-DARTS's K: 1/K of the channels go through the mixed ops
    requires = frozenset({"op-edges", "node-inputs", "partial-channels"})
    provides = frozenset({"edge-betas"})
    partial_channels = 4

    def __init__(self, space: SearchSpace, init_scale: float = 1e-3, k: int = 4):
        super().__init__(space, init_scale)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"relax.k must be a positive integer, got {k!r}")
        self.partial_channels = k
        self.betas = nn.ParameterDict(
            {t: nn.Parameter(init_scale * torch.randn(space.alpha_shape(t)[0])) for t in self.cell_types}
        )

    @classmethod
    def from_config(cls, space: SearchSpace, cfg=None) -> PartialChannelRelaxation:
        relax = super().from_config(space, cfg)
        if cfg is not None and cfg.search.channels % relax.partial_channels:
            raise ConfigError(
                f"relax.k = {relax.partial_channels} must divide search.channels = {cfg.search.channels}"
            )
        return relax

    def edge_weights(self, cell_type: str) -> torch.Tensor:
        """[E]: softmax of beta over the incoming edges of each node (edge normalization)."""
        beta = self.betas[cell_type]
        return torch.cat([F.softmax(beta[self.space.node_edges(n)], dim=0) for n in range(self.space.nodes)])

    def mixing(self, cell_type: str, cell_index: int) -> Mixing:
        return Mixing(self.weights(cell_type), self._computed_ops[cell_type], self.edge_weights(cell_type))

    def genotype_weights(self) -> dict:
        with torch.no_grad():
            return {t: (self.weights(t) * self.edge_weights(t)[:, None]).detach() for t in self.cell_types}
