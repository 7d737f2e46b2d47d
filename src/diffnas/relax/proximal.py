"""NASP's discrete relaxation: continuous alphas, a discrete architecture in every forward pass.

The alphas ``A`` (one [E, O] matrix per cell type) are kept continuous by the method
(NASP clips them to [0, 1], the proximal step onto C2). Every forward pass runs the
*discrete* architecture ``A_bar = prox_C1(A)``: on each edge the op with the largest
alpha, on each node the two edges whose selected alpha is largest (``discrete_mask``
of :mod:`diffnas.spaces.genotype`, the DARTS rule applied to the raw alphas).

- ``mixing`` returns ``A_bar`` (0/1) as the mixing weights, straight-through: its value is
  the binary mask, its gradient lands on the continuous ``A`` unchanged, so
  ``grad_A`` of the architecture loss *is* ``grad_{A_bar} F(w, A_bar)`` (Algorithm 2, step 4).
- Which ops run depends on the phase the method sets with ``computing(...)``:
  ``"weight"`` (the default, also for evaluation): only the selected op of each kept edge,
  nothing on a dropped edge; ``"arch"``: every op of every edge (weights 0 except the
  selected ones), so every alpha entry gets a gradient, as the authors' code does;
  ``"arch_selected"``: only the selected ops also in the architecture step.
- Ties (all alphas are 0.5 at the start, and the [0, 1] clip makes exact ties later)
  are broken in a random order drawn from the run's seed, the same order at every
  step, so the discretization is deterministic and resumes exactly. The final
  genotype is the same rule on the same alphas.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..config import DROP
from ..errors import ConfigError
from ..spaces import Architecture, Mixing
from .base import Relaxation

PHASES = ("weight", "arch", "arch_selected")


class DiscreteRelaxation(Relaxation):
    """A_bar = prox_C1(A) in the forward pass, straight-through to the continuous A."""

    name = "discrete"
    options = {"init_scale": DROP}  # alphas start at init_value, not at random
    requires = frozenset({"op-edges", "projection"})
    provides = frozenset({"discrete"})
    uses_seed = True
    init_value = 0.5  # NASP's initial alpha, the middle of C2 = [0, 1]

    def __init__(self, space, seed: int = 0):
        super().__init__(space)
        self.seed = int(seed)
        self.phase = "weight"
        self._cache: dict = {}

    def init_alpha(self, edges: int, ops: int, scale: float) -> torch.Tensor:
        return torch.full((edges, ops), self.init_value)

    def activation(self, alpha: torch.Tensor) -> torch.Tensor:
        """The continuous A itself (the method keeps it in [0, 1] for NASP)."""
        return alpha

    # -- the discretization ---------------------------------------------------------------
    def tie_generator(self, cell_type: str) -> torch.Generator:
        """A fresh generator per call with a fixed seed: the same random tie order at every step."""
        return torch.Generator().manual_seed(1_000_003 * self.seed + self.cell_types.index(cell_type))

    def prox_c1(self, alpha: torch.Tensor, cell_type: str) -> torch.Tensor:
        """Binary [E, O] mask: one op per edge (largest alpha), two edges per node (largest selected alpha)."""
        return self.space.projection(cell_type, alpha.detach(), self.tie_generator(cell_type)).to(alpha)

    def mask(self, cell_type: str) -> torch.Tensor:
        """prox_C1 of the current alphas, recomputed only when they changed."""
        a = self.alphas[cell_type]
        key = (a._version, a.data_ptr(), a.dtype, a.device)
        hit = self._cache.get(cell_type)
        if hit is None or hit[0] != key:
            m = self.prox_c1(a, cell_type)
            selected = [torch.nonzero(m[e]).flatten().tolist() for e in range(m.shape[0])]
            hit = (key, m, selected)
            self._cache[cell_type] = hit
        return hit[1]

    def selected_ops(self, cell_type: str) -> list:
        """Per edge, the op indices kept by prox_C1 (empty for a dropped edge)."""
        self.mask(cell_type)
        return self._cache[cell_type][2]

    def discrete_weights(self, cell_type: str) -> torch.Tensor:
        """A_bar as a value with A's gradient path (straight-through)."""
        a = self.alphas[cell_type]
        m = self.mask(cell_type)
        return a + (m - a).detach()

    # the size regularizer reads the architecture the loss was computed at
    penalty_weights = discrete_weights

    @contextmanager
    def computing(self, phase: str):
        if phase not in PHASES:
            raise ConfigError(f"unknown phase '{phase}'; choose from {', '.join(PHASES)}")
        old, self.phase = self.phase, phase
        try:
            yield self
        finally:
            self.phase = old

    def mixing(self, cell_type: str, cell_index: int) -> Mixing:
        # always A_bar straight-through to A: under another method (``--relaxation discrete``),
        # an architecture step in the default phase still gets the gradient of the selected entries
        active = self._computed_ops[cell_type] if self.phase == "arch" else self.selected_ops(cell_type)
        return Mixing(self.discrete_weights(cell_type), active)

    # -- what the engine reads --------------------------------------------------------------
    def genotype_weights(self) -> dict:
        with torch.no_grad():
            return {t: self.alphas[t].detach().clone() for t in self.cell_types}

    def genotype(self) -> Architecture:
        """The architecture the search ended at: the same prox_C1 rule and tie order it searched with."""
        return self.space.from_masks({t: self.mask(t).cpu() for t in self.cell_types})

    def record(self) -> dict:
        return {}
