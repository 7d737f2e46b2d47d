"""One architecture at a time: the supernet runs only the ops of the architecture it was told to ``use``.

Random search with weight sharing (``rsws``) trains the supernet one uniformly random
architecture per step and ranks architectures by the shared weights; ``random`` just
draws one. Both hand the relaxation an ``Architecture``; the space turns it into binary
[E, O] op masks (``SearchSpace.to_masks``), which are the mixing weights, and only the
masked ops are computed (single path). The alphas exist, all zero and never trained,
because the step frame's optimizer and the logs expect them.
"""

from __future__ import annotations

import random

import torch

from ..config import DROP
from ..spaces import Architecture, Mixing
from .base import Relaxation


class SinglePathRelaxation(Relaxation):
    """The mixing weights are the op masks of one architecture; every other op is never run."""

    name = "single-path"
    options = {"init_scale": DROP}
    requires = frozenset({"op-edges", "random-architectures"})
    provides = frozenset({"single-path"})
    uses_seed = True

    def __init__(self, space, seed: int = 0):
        super().__init__(space)
        for a in self.alphas.values():
            a.requires_grad_(False)
        self.use(space.random_architecture(random.Random(seed)))  # defined before any method picks one

    def init_alpha(self, edges: int, ops: int, scale: float) -> torch.Tensor:
        return torch.zeros(edges, ops)

    def use(self, architecture: Architecture) -> None:
        """Run ``architecture`` alone from now on."""
        self.architecture = architecture
        self._masks = {t: m.to(self.alphas[t].device) for t, m in self.space.to_masks(architecture).items()}
        self._active = {t: [torch.nonzero(row).flatten().tolist() for row in m] for t, m in self._masks.items()}

    def mixing(self, cell_type: str, cell_index: int) -> Mixing:
        mask = self._masks[cell_type]
        device = self.alphas[cell_type].device
        if mask.device != device:  # the supernet moved after ``use``
            mask = self._masks[cell_type] = mask.to(device)
        return Mixing(mask, self._active[cell_type])

    def genotype_weights(self) -> dict:
        return {t: m.detach().cpu().clone() for t, m in self._masks.items()}

    def genotype(self) -> Architecture:
        return self.architecture
