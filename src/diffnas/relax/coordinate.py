"""DARTS-CD's relaxations (Ahn, Hong, Kim, IEEE Access 2021): coordinate and max-alpha.

``coordinate`` (the paper's equation 2 and Algorithm 1): in every training step M
edges (M = 1 in the paper) are sampled uniformly; a sampled edge is the softmax
mixture of all its ops, every other edge runs only its max-alpha op with weight 1
(no alpha dependence, so its alphas get no gradient). The sample is drawn per cell,
inside each cell's forward pass as in Algorithm 1 (``sample="cell"``), once per
cell type for all cells of that type (``sample="cell_type"``), or once for the whole
network (``sample="network"``: M edges among all cells' edges, the abstract's "one
edge per training step"; the cheapest reading, since every cell without a relaxed edge
is a single path).

``max-alpha`` (the paper's ablation): every edge runs only its max-alpha op. Its
weight is a straight-through one-hot: exactly 1 in the forward pass, the gradient of
softmax(alpha)[max] in the backward pass, so alphas still learn.

For ``coordinate`` the max-alpha op is the argmax over all ops of the edge, `none`
included (Algorithm 1; an edge whose max is `none` contributes zero and runs nothing);
``argmax_none=False`` takes the best non-`none` op instead. ``max-alpha`` always takes
the best non-`none` op (the derived architecture's), so every edge runs and learns. In
eval mode (the supernet's val accuracy) no edge is relaxed: the max-alpha network is
evaluated.

The sample is a pure function of (seed, step counter, cell): the counter is a buffer,
so a resumed run draws the same edges as an uninterrupted one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import DROP
from ..errors import ConfigError
from ..spaces import Mixing, SearchSpace
from .base import Relaxation

SAMPLE_MODES = ("cell", "cell_type", "network")


class CoordinateRelaxation(Relaxation):
    """One (or M) softmax-relaxed edge(s) per cell and step; the max-alpha op everywhere else."""

    name = "coordinate"
    options = {
        "edges": 1,  # M: relaxed edges per cell and step
        "sample": "cell",  # cell (Algorithm 1) | cell_type | network (M edges in the whole network)
        "argmax_none": True,  # the max-alpha op may be `none` (the edge then runs nothing)
    }
    provides = frozenset({"sign-flip", "edge-sampling"})
    uses_seed = True

    def __init__(
        self,
        space: SearchSpace,
        init_scale: float = 1e-3,
        seed: int = 0,
        edges: int = 1,
        sample: str = "cell",
        argmax_none: bool = True,
    ):
        super().__init__(space, init_scale)
        if sample not in SAMPLE_MODES:
            raise ConfigError(f"relax.sample must be one of {', '.join(SAMPLE_MODES)}, got '{sample}'")
        if not isinstance(edges, int) or not 1 <= edges <= space.num_edges:
            raise ConfigError(f"relax.edges must be an integer in [1, {space.num_edges}], got {edges!r}")
        self.seed, self.num_relaxed, self.sample, self.argmax_none = int(seed), edges, sample, bool(argmax_none)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # step counter: the sample's key
        self.register_buffer("sign", torch.ones(()))  # +1 / -1: parity of the warm-up sign inversions
        self._relaxed: dict = {}  # sample key -> sorted edge indices, for the current step
        self._snapshot: dict | None = None  # max-alpha ops at the first step of an epoch, for the log
        self._epoch_started = False
        self._cells: list = []  # the supernet's (cell type, index) (``cells_built``): sample="network" draws among them

    def cells_built(self, keys: list) -> None:
        self._cells = list(keys)

    # -- which ops run ---------------------------------------------------------------------
    def max_alpha_ops(self, cell_type: str) -> torch.Tensor:
        """[E] long: the op with the largest alpha on each edge (`none` excluded if ``argmax_none`` is off)."""
        alpha = self.alphas[cell_type].detach()
        if not self.argmax_none and self.space.has_none(cell_type):
            alpha = alpha.clone()
            alpha[:, self.space.ops[cell_type].index("none")] = float("-inf")
        return alpha.argmax(dim=1)

    def _sample_key(self, cell_type: str, cell_index: int) -> int:
        return cell_index if self.sample == "cell" else -1 - self.cell_types.index(cell_type)

    def _draw(self, key: int, n: int) -> list[int]:
        """M distinct indices of range(n), uniform: a pure function of (seed, step, key), so reproducible on
        resume and independent of call order."""
        mixed = ((self.seed * 1_000_003 + int(self.steps)) * 8191 + key + 4096) % (2**62)
        g = torch.Generator().manual_seed(mixed)
        return sorted(torch.randperm(n, generator=g)[: self.num_relaxed].tolist())

    def relaxed_edges(self, cell_type: str, cell_index: int) -> list[int]:
        """The edges relaxed in this step in cell ``cell_index`` (sorted); M distinct edges, uniform."""
        if self.sample == "network":
            if not self._relaxed:
                if not self._cells:
                    raise ConfigError("relax.sample=network needs a supernet that names its cells (cells_built)")
                E = self.space.num_edges
                self._relaxed = {index: [] for _, index in self._cells}
                for k in self._draw(-4096, len(self._cells) * E):  # (a key no cell or cell type uses)
                    self._relaxed[self._cells[k // E][1]].append(k % E)
            return self._relaxed[cell_index]
        key = self._sample_key(cell_type, cell_index)
        if key not in self._relaxed:
            self._relaxed[key] = self._draw(key, self.space.num_edges)
        return self._relaxed[key]

    straight_through = False  # max-alpha: the single-path weights carry a gradient to the alphas

    def single_path_weights(self, cell_type: str, top: torch.Tensor) -> torch.Tensor:
        """[E, O] weights of the max-alpha edges: a constant one-hot (equation 2: o_m(x), no alpha)."""
        alpha = self.alphas[cell_type]
        return F.one_hot(top, alpha.shape[1]).to(alpha.dtype)

    def mixing(self, cell_type: str, cell_index: int) -> Mixing:
        alpha = self.alphas[cell_type]
        top = self.max_alpha_ops(cell_type)
        weights = self.single_path_weights(cell_type, top)
        # the single-path rows are constants, unless they carry max-alpha's straight-through gradient (even in
        # a phase where it is not asked for: both phases then mix alike, so lean and full steps agree bit for bit)
        single_path = None if self.straight_through else [True] * alpha.shape[0]
        relaxed = self.relaxed_edges(cell_type, cell_index) if self.training else []
        if relaxed:
            rows = torch.zeros(alpha.shape[0], dtype=torch.bool, device=alpha.device)
            rows[relaxed] = True
            weights = torch.where(rows[:, None], self.activation(alpha), weights)
            if single_path is not None:
                single_path = [e not in relaxed for e in range(alpha.shape[0])]
        names = self.space.ops[cell_type]
        active = [
            self._computed_ops[cell_type][e] if e in relaxed else ([] if names[o] == "none" else [o])
            for e, o in enumerate(top.tolist())
        ]
        return Mixing(weights, active, single_path=single_path)

    # -- hooks -----------------------------------------------------------------------------
    @torch.no_grad()
    def flip_sign(self) -> None:
        """Warm-up: alpha <- -alpha for every alpha, so the next epoch computes softmax(-alpha) (equation 3)."""
        for a in self.alphas.values():
            a.neg_()
        self.sign.neg_()

    def epoch_start(self, epoch: int) -> None:
        self._epoch_started = True

    def step_start(self) -> None:
        self.steps += 1
        self._relaxed = {}
        self._snapshot = None
        if self._epoch_started:  # the max-alpha op of every edge as the epoch starts (after any sign flip)
            self._snapshot = {t: self.max_alpha_ops(t).tolist() for t in self.cell_types}
            self._epoch_started = False

    def record(self) -> dict:
        rec: dict = {}
        if self.sample in ("cell", "network"):
            rec["relaxed"] = [self._relaxed[k] for k in sorted(k for k in self._relaxed if k >= 0)]
        else:
            rec["relaxed"] = {t: self._relaxed.get(self._sample_key(t, 0), []) for t in self.cell_types}
        if self._snapshot is not None:
            rec["max_alpha"] = self._snapshot
            rec["alpha_sign"] = int(self.sign.item())
        return rec


class MaxAlphaRelaxation(CoordinateRelaxation):
    """Every edge runs its max-alpha op only; straight-through gradient to alpha."""

    name = "max-alpha"
    provides = frozenset({"sign-flip"})
    straight_through = True
    # no edge is sampled; the active op is the derived architecture's, never `none`: a `none` max would
    # run nothing, get no gradient and stay `none` for the whole search
    options = {"edges": DROP, "sample": DROP, "argmax_none": DROP}

    def __init__(self, space: SearchSpace, init_scale: float = 1e-3, seed: int = 0):
        super().__init__(space, init_scale, seed, argmax_none=False)

    def relaxed_edges(self, cell_type: str, cell_index: int) -> list[int]:
        return []

    def single_path_weights(self, cell_type: str, top: torch.Tensor) -> torch.Tensor:
        onehot = super().single_path_weights(cell_type, top)
        if not (self.training and torch.is_grad_enabled()):
            return onehot
        p = self.activation(self.alphas[cell_type])
        # (p - p.detach()) is exactly 0 in the forward pass, so the weights are exactly the one-hot
        return onehot + (p - p.detach())

    def record(self) -> dict:
        rec = super().record()
        rec.pop("relaxed", None)
        return rec
