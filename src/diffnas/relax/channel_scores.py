"""Per-channel architecture scores (width search): one learnable score per channel, used as it is.

Not an edge relaxation: the space declares the score vectors it needs (``arch_shapes``:
{layer: (channels,)}) and the supernet multiplies each channel by its score. Every
method that moves ``arch_parameters()`` (darts, darts2, rarts, milenas) searches them
unchanged; ``use(architecture)`` pins the scores to an architecture's 0/1 channel mask,
which is how the random-pruning baseline (``--method random``) runs here.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..spaces import Architecture
from .base import Relaxation


class ChannelScores(Relaxation):
    name = "channel-scores"
    # init: every score's starting value (1: the search starts from the plain backbone); noise: std added to it
    options = {"init_scale": 0.0, "init": 1.0}
    requires = frozenset({"channel-scores"})
    provides = frozenset({"channel-scores", "single-path"})

    def __init__(self, space, init_scale: float = 0.0, init: float = 1.0):
        nn.Module.__init__(self)  # no op edges: the parameters are the space's score vectors, not [E, O] matrices
        self.space = space
        shapes = space.arch_shapes()
        self.cell_types = tuple(shapes)
        self.alphas = nn.ParameterDict(
            {k: nn.Parameter(init + init_scale * torch.randn(*shape)) for k, shape in shapes.items()}
        )
        self.architecture = None  # set by ``use``: the scores stay its mask

    def activation(self, alpha: torch.Tensor) -> torch.Tensor:
        return alpha

    def use(self, architecture: Architecture) -> None:
        """Pin the scores to ``architecture``'s channel mask (1 kept, 0 pruned); the genotype is then that one."""
        self.architecture = architecture
        with torch.no_grad():
            for k, m in self.space.to_masks(architecture).items():
                self.alphas[k].copy_(m)

    def genotype(self) -> Architecture:
        return self.architecture if self.architecture is not None else super().genotype()
