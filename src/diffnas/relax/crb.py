"""DARTS-PRIME's CRB activation (Maile et al., AAAI 2022, supplement S1.1): clipped ReLU + node BatchNorm.

act(alpha) = clamp(alpha, 0, 1) instead of softmax; each intermediate node's sum of
edges goes through a non-affine BatchNorm (``node_norm``), so edges stay comparable;
the `none` op is dropped (on a space that has it, it starts pruned); alpha starts at
1/O + 1e-4 N(0, 1) over the O real ops; alpha gets no weight decay.

Progressive pruning: at the start of every step, an op whose alpha is <= 0 is pruned
for good: its alpha is set to 0, its bit in the ``keep_<cell type>`` buffer (saved with
the supernet, so a resume keeps it) is cleared, and it leaves ``active``, so it is
never computed again. A pruned op never comes back, whatever the optimizer does to
its alpha later: its weight is multiplied by the mask.
"""

from __future__ import annotations

import torch

from ..spaces import Mixing
from .base import Relaxation


class CRB(Relaxation):
    name = "crb"
    options = {"init_scale": 1e-4}  # the noise on the 1/O start
    requires = frozenset({"op-edges", "node-norm"})
    provides = frozenset({"pruning"})
    node_norm = True
    arch_weight_decay = 0.0

    def __init__(self, space, init_scale: float = 1e-4):
        super().__init__(space, init_scale)
        for t in self.cell_types:
            keep = torch.tensor([name != "none" for name in space.ops[t]], dtype=torch.bool)
            keep = keep.unsqueeze(0).repeat(space.alpha_shape(t)[0], 1)
            self.register_buffer(f"keep_{t}", keep)
            with torch.no_grad():
                n_ops = int(keep[0].sum())
                self.alphas[t].add_(1.0 / n_ops).mul_(keep)

    def keep(self, cell_type: str) -> torch.Tensor:
        return getattr(self, f"keep_{cell_type}")

    def activation(self, alpha: torch.Tensor) -> torch.Tensor:
        return torch.clamp(alpha, 0.0, 1.0)

    def weights(self, cell_type: str) -> torch.Tensor:
        return self.activation(self.alphas[cell_type]) * self.keep(cell_type)

    def mixing(self, cell_type: str, cell_index: int) -> Mixing:
        keep = self.keep(cell_type).cpu()
        active = [torch.nonzero(row).flatten().tolist() for row in keep]
        return Mixing(self.weights(cell_type), active)

    @torch.no_grad()
    def prune(self) -> int:
        """Prune every op whose alpha is <= 0; returns how many were newly pruned."""
        newly = 0
        for t in self.cell_types:
            keep, alpha = self.keep(t), self.alphas[t]
            drop = keep & (alpha <= 0)
            newly += int(drop.sum())
            keep &= ~drop
            alpha.mul_(keep)  # pruned alphas rest at exactly 0
        return newly

    def step_start(self) -> None:
        self.prune()

    def record(self) -> dict:
        return {f"pruned_{t}": int((~self.keep(t)).sum()) for t in self.cell_types}
