"""Edge relaxations: how the architecture parameters turn into the mixing of each edge's ops.

A relaxation owns the architecture parameters (so they are checkpointed with the
supernet) and answers, for every cell, a ``Mixing``: the weight of each op on each
edge, which ops to compute at all, and optionally a weight per edge. Ops left out of
``active`` are never run: that is where single-path and pruning methods save time.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import inherited
from ..errors import ConfigError
from ..spaces import Architecture, Mixing, SearchSpace


class Relaxation(nn.Module):
    """Base: one alpha tensor [E, O] per cell type, the softmax mixture of all non-`none` ops.

    ``options`` are the relaxation's config keys (``relax.*``) with their defaults, the
    constructor's keyword arguments; a subclass lists only what it adds or changes.
    """

    options: dict = {"init_scale": 1e-3}  # std of the random initial alphas
    requires = frozenset({"op-edges"})  # what the space must provide
    provides: frozenset = frozenset()  # what methods may rely on (e.g. "edge-betas")
    uses_seed = False  # the constructor takes the run's seed
    # supernet construction hints read once when the supernet is built
    partial_channels = 1  # PC-DARTS's K: only C/K channels go through the ops
    node_norm = False  # DARTS-PRIME's CRB: non-affine BN after each node's sum
    arch_weight_decay = None  # None: search.a_wd; DARTS-PRIME's CRB turns alpha's weight decay off (0.0)

    def __init__(self, space: SearchSpace, init_scale: float = 1e-3):
        super().__init__()
        self.space = space
        self.cell_types = space.cell_types
        self.alphas = nn.ParameterDict(
            {t: nn.Parameter(self.init_alpha(*space.alpha_shape(t), init_scale)) for t in self.cell_types}
        )
        # ops worth computing: `none` contributes exactly zero
        self._computed_ops = {
            t: [[o for o, name in enumerate(space.ops[t]) if name != "none"] for _ in range(space.alpha_shape(t)[0])]
            for t in self.cell_types
        }

    @classmethod
    def defaults(cls) -> dict:
        return inherited(cls, "options")

    @classmethod
    def from_config(cls, space: SearchSpace, cfg=None) -> Relaxation:
        """Built from ``cfg.relax`` (the resolved options of this relaxation) and the run's seed."""
        opts = cls.defaults()
        if cfg is not None:
            unknown = set(cfg.get("relax") or {}) - set(opts)
            if unknown:
                raise ConfigError(f"relaxation {cls.name} has no option(s) {', '.join(sorted(unknown))}")
            opts.update(cfg.get("relax") or {})
        if cls.uses_seed:
            opts["seed"] = cfg.seed if cfg is not None else 0
        return cls(space, **opts)

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
            return {t: self.weights(t).detach() for t in self.cell_types}

    def genotype(self) -> Architecture:
        return self.space.derive(self.genotype_weights())

    # hooks a relaxation with state (sampling, pruning, sign flips) may use
    def cells_built(self, keys: list) -> None:
        """The supernet's cells, [(cell type, cell index)], once it is built (sampling over the whole network)."""

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
