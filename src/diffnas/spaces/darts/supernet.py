"""The one-shot network of a DARTS cell space: every edge holds every candidate op; a relaxation says how to mix them.

The supernet asks the relaxation for a ``Mixing`` per cell and reads a few declared
facts from it when it is built (``partial_channels``, ``node_norm``); it says the
shapes of its edges' inputs (``edge_shapes``) to whoever sizes per-op costs.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ...errors import ConfigError
from ..base import Mixing, RelaxedNetwork
from .fastops import shared_inputs
from .network import CellSpec, build_stem, cell_plan, make_preprocess, stem_states
from .ops import OPS, PoolBN

PRECISIONS = ("auto", "fp32", "bf16")


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class MixedEdge(nn.Module):
    """All candidate ops of one edge. With ``partial_channels`` K > 1 (PC-DARTS), only the
    first C/K channels go through the ops; the rest bypass them (max-pooled on a
    reduction edge) and the result is channel-shuffled."""

    def __init__(self, op_names, C: int, stride: int, partial_channels: int = 1):
        super().__init__()
        if C % partial_channels:
            raise ValueError(f"channels {C} not divisible by partial_channels {partial_channels}")
        self.k = partial_channels
        self.stride = stride
        c_ops = C // partial_channels
        # `none` gets no module: it is never computed
        self.ops = nn.ModuleList(
            nn.Identity() if name == "none" else OPS[name](c_ops, stride, False) for name in op_names
        )

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None, active) -> torch.Tensor:
        """``weights``: [O], op o's output scaled by ``weights[o]``; None: a single path, its op's output as is."""
        if self.k == 1:
            return self._mix(x, weights, active)
        c_ops = x.shape[1] // self.k
        x_ops, x_bypass = x[:, :c_ops], x[:, c_ops:]
        if self.stride == 2:
            x_bypass = F.max_pool2d(x_bypass, 2, 2, ceil_mode=True)
        return channel_shuffle(torch.cat([self._mix(x_ops, weights, active), x_bypass], dim=1), self.k)

    def buffers_of(self, active) -> list:
        """The buffers (BN running statistics) that running ``active`` updates."""
        return [b for o in active for b in self.ops[o].buffers()]

    def recomputable(self, active) -> bool:
        """Whether ``active`` keeps anything for backward that a rerun can give back the same, bit for bit: not an
        identity or `none` (nothing kept), not a pool (its result is shared with the other edges reading its
        input, ``PoolBN``; computed apart, its gradient would be summed in another order)."""
        return bool(active) and not any(isinstance(self.ops[o], (nn.Identity, PoolBN)) for o in active)

    def _mix(self, x, weights, active):
        if not active:  # nothing selected on this edge: contributes zero
            h, w = -(-x.shape[2] // self.stride), -(-x.shape[3] // self.stride)
            return x.new_zeros(x.shape[0], x.shape[1], h, w)
        out = None
        for o in active:
            y = self.ops[o](x) if weights is None else weights[o] * self.ops[o](x)
            out = y if out is None else out + y
        return out


class SearchCell(nn.Module):
    def __init__(self, spec: CellSpec, relax):
        super().__init__()
        space = relax.space
        self.index = spec.index
        self.cell_type = "reduce" if spec.reduction else "normal"
        self.nodes = space.nodes
        self.pre0, self.pre1 = make_preprocess(spec, affine=False)
        self.inputs = [j for _, j in space.edge_inputs()]
        self.edges = nn.ModuleList(
            MixedEdge(space.ops[self.cell_type], spec.c, 2 if spec.reduction and j < 2 else 1, relax.partial_channels)
            for j in self.inputs
        )
        self.node_norms = (
            nn.ModuleList(nn.BatchNorm2d(spec.c, affine=False) for _ in range(space.nodes)) if relax.node_norm else None
        )

    def buffers_of(self, mix: Mixing) -> list:
        """The buffers that a forward under ``mix`` updates: its preprocessing's, its active ops', its nodes'."""
        parts = [self.pre0, self.pre1, *(self.node_norms or [])]
        return [b for p in parts for b in p.buffers()] + [
            b for edge, active in zip(self.edges, mix.active) for b in edge.buffers_of(active)
        ]

    def forward(self, s0, s1, mix: Mixing, recompute: bool = False):
        """``recompute``: a frozen edge (``frozen``) keeps only its input for backward and runs again there."""
        with shared_inputs():  # pool+BN computed once per state, shared by the edges reading it
            return self._forward(s0, s1, mix, recompute)

    def _forward(self, s0, s1, mix: Mixing, recompute: bool = False):
        states = [self.pre0(s0), self.pre1(s1)]
        first = 0  # the node's first edge
        for node in range(self.nodes):
            total, empty = None, None
            for e in range(first, first + 2 + node):
                x, w, active, edge = states[self.inputs[e]], mix.weights[e], mix.active[e], self.edges[e]
                if not active:  # contributes zero: nothing to add (unless every edge of the node is empty)
                    empty = (edge, x)
                    continue
                if mix.single_path is not None and mix.single_path[e]:
                    w = None  # the op's output as is: weight exactly 1, no multiply, no alpha behind it
                if recompute and edge.recomputable(active) and frozen(edge, (x,), (w,)):
                    h = recomputed(edge, (x,), w, active, buffers=edge.buffers_of(active))
                else:
                    h = edge(x, w, active)
                if mix.edge_weights is not None:
                    h = mix.edge_weights[e] * h
                total = h if total is None else total + h
            first += 2 + node
            if total is None:
                edge, x = empty
                total = edge(x, None, [])
            if self.node_norms is not None:
                total = self.node_norms[node](total)
            states.append(total)
        return torch.cat(states[2:], dim=1)


def frozen(module: nn.Module, inputs: tuple, constants: tuple = ()) -> bool:
    """Recorded only to pass gradients on: an input requires grad; no parameter, no other tensor it uses does."""
    if not (torch.is_grad_enabled() and any(x.requires_grad for x in inputs)):
        return False
    if any(c is not None and c.requires_grad for c in constants):
        return False
    return not any(p.requires_grad for p in module.parameters())


def recomputed(module: nn.Module, inputs: tuple, *rest, buffers: list | None = None) -> torch.Tensor:
    """``module(*inputs, *rest)`` that saves only ``inputs`` for backward and runs again there (a checkpoint);
    the rerun leaves ``buffers`` (default: all the module's; the BN running statistics the run updates) as the
    first run left them."""
    runs = []
    buffers = list(module.buffers()) if buffers is None else buffers

    def run(*xs):
        if not runs:
            runs.append(True)
            with shared_inputs():  # its own cache: both runs compute the same ops, whatever other edges did
                return module(*xs, *rest)
        kept = [t.clone() for t in buffers]
        try:  # (the rerun may be stopped early, once it has recomputed what the backward needs)
            with shared_inputs():
                return module(*xs, *rest)
        finally:
            with torch.no_grad():
                torch._foreach_copy_(buffers, kept)

    return checkpoint(run, *inputs, use_reentrant=False, preserve_rng_state=False)


class Supernet(RelaxedNetwork, nn.Module):
    """Stem, cells (reductions at 1/3 and 2/3), global pooling and a linear classifier.

    ``precision``: ``auto`` (bf16 autocast on CUDA, float32 elsewhere), ``fp32`` or ``bf16``
    (autocast on any device); ``full_precision()`` turns autocast off for a block of code
    (DARTS's second order: its finite differences drown in bf16 rounding).
    """

    channels_last = True  # NHWC activations (convs are faster in it on CPU and GPU)

    def __init__(
        self,
        relax,
        channels: int,
        layers: int,
        num_classes: int,
        in_channels: int = 3,
        stem_multiplier: int = 3,
        precision: str = "auto",
        stem: str = "cifar",
    ):
        super().__init__()
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.relax = relax
        self.precision = precision
        self._autocast_off = 0
        self._recompute = 0
        nodes = relax.space.nodes
        self.plan = cell_plan(layers, channels, stem_multiplier, lambda s: nodes, reduced_stem=stem == "imagenet")
        self.stem = build_stem(stem, in_channels, stem_multiplier * channels)  # imagenet: PC-DARTS's 224 -> 28
        self.cells = nn.ModuleList(SearchCell(s, relax) for s in self.plan)
        # each cell's activations, relative: its channels times its output's area (a quarter per reduction)
        self.cell_sizes = [s.c / 4 ** sum(r.reduction for r in self.plan[: i + 1]) for i, s in enumerate(self.plan)]
        self.worth_recomputing = self._worth_recomputing()
        self.classifier = nn.Linear(self.plan[-1].c * nodes, num_classes)
        relax.cells_built(self.cell_keys())

    def autocast_dtype(self, x: torch.Tensor):
        """The autocast dtype for an input on ``x``'s device, or None for float32."""
        if self._autocast_off or self.precision == "fp32":
            return None
        if self.precision == "bf16" or (self.precision == "auto" and x.is_cuda):
            return torch.bfloat16
        return None

    @contextlib.contextmanager
    def full_precision(self):
        self._autocast_off += 1
        try:
            yield
        finally:
            self._autocast_off -= 1

    @contextlib.contextmanager
    def recomputing_frozen_cells(self, share: float = 1.0):
        """Within: a frozen cell or edge (``frozen``) keeps only its inputs for backward and runs again there.

        Such a cell is recorded only to pass gradients to what precedes it; keeping its
        activations would cost as much as a trained cell's. Recomputed one cell at a time in
        backward, the step holds the cells' inputs plus one cell's activations, for one more
        forward of those cells: of the first cells holding ``share`` of all cells' activations,
        and never of the last ones, when keeping them costs no peak (``_worth_recomputing``).
        Outputs, gradients and BN running statistics stay the same bit for bit (the
        recomputation restores the statistics it updates).
        """
        self._recompute += 1
        kept, self.worth_recomputing = self.worth_recomputing, self._worth_recomputing(share)
        try:
            yield
        finally:
            self._recompute -= 1
            self.worth_recomputing = kept

    def _worth_recomputing(self, share: float = 1.0) -> list[bool]:
        """Per cell: recompute what is frozen in it? Only in the first cells that hold ``share`` of all cells'
        activations: early cells are the cheap ones to recompute (the largest, and run again only when the
        relaxed edge lies before them). Never in the last cells whose activations add up to at most the
        largest cell's: backward frees them before it recomputes any earlier cell, and a step that records
        the largest cell keeps that much anyway, so keeping them costs no peak and saves the time."""
        sizes, worth, tail = self.cell_sizes, [], 0.0
        for size in reversed(sizes):
            tail += size
            worth.append(tail > max(sizes))
        before = [sum(sizes[:i]) for i in range(len(sizes))]
        return [w and b < share * sum(sizes) for w, b in zip(worth[::-1], before)]

    def forward(self, x):
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)  # faster convs on CPU and GPU
        dtype = self.autocast_dtype(x)
        if dtype is not None:
            with torch.autocast(x.device.type, dtype=dtype):
                return self._forward(x).float()
        return self._forward(x)

    def _forward(self, x):
        s0, s1 = stem_states(self.stem, x)
        for cell, worth in zip(self.cells, self.worth_recomputing):
            mix = self.relax.mixing(cell.cell_type, cell.index)
            worth = worth and self._recompute > 0
            if worth and frozen(cell, (s0, s1), (mix.weights, mix.edge_weights)):
                # the whole cell: keeps its two inputs only
                s0, s1 = s1, recomputed(cell, (s0, s1), mix, buffers=cell.buffers_of(mix))
            else:  # (with ``worth``, its frozen edges recomputed one by one)
                s0, s1 = s1, cell(s0, s1, mix, recompute=worth)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))

    def cell_keys(self) -> list[tuple[str, int]]:
        """(cell type, cell index) of every cell: the keys a relaxation's ``mixing`` is asked with."""
        return [(cell.cell_type, cell.index) for cell in self.cells]

    def edge_parameters(self) -> dict:
        """{(cell index, edge): the parameters of that edge's ops}; every other weight is shared by no edge."""
        return {(cell.index, e): list(edge.parameters()) for cell in self.cells for e, edge in enumerate(cell.edges)}

    def shared_parameters(self) -> dict:
        """The weights of no edge, by what they feed: {"classifier": [...] (every edge), cell index: the parts
        whose output is that cell's input (its preprocessing; the stem for cells 0 and 1)}."""
        shared = {"classifier": list(self.classifier.parameters())}
        for cell in self.cells:
            stem = list(self.stem.parameters()) if cell.index <= 1 else []
            shared[cell.index] = [*stem, *cell.pre0.parameters(), *cell.pre1.parameters()]
        return shared

    def edge_shapes(self, input_shape) -> list:
        """Per cell: (cell type, [(channels, height, width, stride) per edge]) of the edges' op inputs.

        Edges from the cell's two inputs see the cell's input resolution (stride 2 in a
        reduction cell), edges from its nodes the output resolution; partial-channel edges
        (PC-DARTS) run their ops on C / K channels. ``input_shape``: (C, H, W) of the data.
        """
        _, h, w = input_shape
        out = []
        for cell, spec in zip(self.cells, self.plan):
            h2, w2 = (-(-h // 2), -(-w // 2)) if spec.reduction else (h, w)
            shapes = []
            for edge, j in zip(cell.edges, cell.inputs):
                c = spec.c // edge.k
                shapes.append((c, h, w, edge.stride) if j < 2 else (c, h2, w2, 1))
            out.append((cell.cell_type, shapes))
            h, w = h2, w2
        return out
