"""The NAS-Bench-201 search network (the public ``TinyNetworkDarts``), with its cells computed cheaply.

Every edge holds the benchmark's ops (non-affine BN, convs with a bias), built as the
public code builds them, so parameters, initialization and state dict are its own.
What differs is how a cell is computed, with the same outputs and gradients:

- `none` is never computed (its weighted output is zero);
- the convolutions of all edges leaving one node read the same input, so they run as one
  convolution (the 1x1 kernels as the centres of 3x3 ones) with one ReLU and one batch
  norm; in CPU training this is ``fastops``'s fused ReLU-conv-BN, which keeps only its
  input and output for the backward pass and recomputes the ReLU;
- a node's average pool is computed once, whichever edges read it.

Under batch statistics (training), the conv bias before a non-affine BN cancels exactly,
so the fused training path leaves it out (its gradient is zero either way); evaluation
with running statistics adds it. The relaxation decides the mixing
(``Mixing``: op weights, active ops, edge weights); PC-DARTS's partial channels and
DARTS-PRIME's node norms are built when the relaxation asks for them.
"""

from __future__ import annotations

import types

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import ConfigError
from ..base import Mixing
from ..darts import fastops
from ..darts.supernet import PRECISIONS, channel_shuffle
from ..darts.supernet import Supernet as DartsSupernet
from .architecture import EDGES, NODES, node_edges
from .ops import CONV_KERNELS, ResNetBasicBlock, head, make_op, stage_plan, stem


class Edge(nn.Module):
    """The ops of one edge (no module for `none`), keyed by name."""

    def __init__(self, names, C: int):
        super().__init__()
        self.ops = nn.ModuleDict({n: make_op(n, C, affine=False) for n in names if n != "none"})


def _kernel3(w: torch.Tensor) -> torch.Tensor:
    k = w.shape[-1]
    return w if k == 3 else F.pad(w, (1, 1, 1, 1))


class SearchCell(nn.Module):
    def __init__(self, C: int, index: int, relax):
        super().__init__()
        names = relax.space.ops["normal"]
        self.index, self.cell_type, self.names = index, "normal", names
        self.k = relax.partial_channels
        if C % self.k:
            raise ConfigError(f"channels {C} not divisible by partial_channels {self.k}")
        self.c_ops = C // self.k
        self.edges = nn.ModuleList(Edge(names, self.c_ops) for _ in EDGES)
        self.node_norms = (
            nn.ModuleList(nn.BatchNorm2d(C, affine=False) for _ in range(NODES - 1)) if relax.node_norm else None
        )

    def convs(self, x: torch.Tensor, pairs) -> list[torch.Tensor]:
        """The outputs of the ReLU-conv-BN ops ``pairs`` [(edge, name)], all reading ``x``, as one convolution."""
        mods = [self.edges[e].ops[n].op for e, n in pairs]
        convs, bns = [m[1] for m in mods], [m[2] for m in mods]
        w = torch.cat([_kernel3(c.weight) for c in convs])
        bn0 = bns[0]
        tracked = bn0.track_running_stats
        # nn.BatchNorm's factor for this update (momentum None: the cumulative average)
        momentum = bn0.momentum if bn0.momentum is not None else 1.0 / float(bn0.num_batches_tracked + 1)
        stats = types.SimpleNamespace(
            running_mean=torch.cat([b.running_mean for b in bns]) if tracked else None,
            running_var=torch.cat([b.running_var for b in bns]) if tracked else None,
            momentum=momentum,
            eps=bn0.eps,
            num_batches_tracked=torch.zeros((), dtype=torch.long),
            training=bn0.training,
            affine=False,
            track_running_stats=tracked,
        )
        if fastops.usable(x, stats):
            y = fastops._ReluConvBN.apply(x, w, None, stats, 1, 1, 1, 1)
            with torch.no_grad():  # the batch mean with the bias, as the plain op's running mean has it
                stats.running_mean.add_(torch.cat([c.bias for c in convs]), alpha=momentum)
        else:
            b = F.conv2d(F.relu(x), w, torch.cat([c.bias for c in convs]), padding=1)
            batch_stats = bn0.training or not tracked
            y = F.batch_norm(b, stats.running_mean, stats.running_var, None, None, batch_stats, momentum, bn0.eps)
        if tracked and bn0.training:  # each op's BN gets its own running-statistics update
            with torch.no_grad():
                for b, m, v in zip(bns, stats.running_mean.split(self.c_ops), stats.running_var.split(self.c_ops)):
                    b.running_mean.copy_(m)
                    b.running_var.copy_(v)
                    b.num_batches_tracked.add_(1)
        return list(y.split(self.c_ops, dim=1))

    def forward(self, x: torch.Tensor, mix: Mixing) -> torch.Tensor:
        names, k, c = self.names, self.k, self.c_ops
        weights = mix.weights if mix.edge_weights is None else mix.weights * mix.edge_weights[:, None]
        active = [[o for o in ops if names[o] != "none"] for ops in mix.active]
        states, inputs, terms = [x], [], {}  # terms[(edge, op name)]: that op's output

        def read(j: int) -> None:
            """Compute what the edges leaving node j need: its conv outputs at once, its pool once."""
            s = states[j][:, :c] if k > 1 else states[j]
            inputs.append(s)
            out = [e for e, (_, src) in enumerate(EDGES) if src == j]
            pairs = [(e, names[o]) for e in out for o in active[e] if names[o] in CONV_KERNELS]
            if pairs:
                terms.update(zip(pairs, self.convs(s, pairs)))
            if any(names[o] == "avg_pool_3x3" for e in out for o in active[e]):
                pool = F.avg_pool2d(s, 3, 1, 1, count_include_pad=False)
                terms.update({(e, "avg_pool_3x3"): pool for e in out})

        for i in range(1, NODES):
            read(i - 1)
            total = None
            for e in node_edges(i):
                j = EDGES[e][1]
                for o in active[e]:
                    t = inputs[j] if names[o] == "skip_connect" else terms[(e, names[o])]
                    y = weights[e, o] * t
                    total = y if total is None else total + y
            if total is None:  # no op runs into this node: it is zero
                total = inputs[0].new_zeros(inputs[0].shape)
            if k > 1:  # PC-DARTS: the bypassed channels, weighted by each edge's weight, then the shuffle
                bypass = None
                for e in node_edges(i):
                    b = states[EDGES[e][1]][:, c:]
                    if mix.edge_weights is not None:
                        b = mix.edge_weights[e] * b
                    bypass = b if bypass is None else bypass + b
                total = channel_shuffle(torch.cat([total, bypass], dim=1), k)
            if self.node_norms is not None:
                total = self.node_norms[i - 1](total)
            states.append(total)
        return states[-1]


class Supernet(DartsSupernet):
    """Stem, 3 stages of N search cells with ResNet reduction blocks between them, BN-ReLU, pool, linear.

    Shares the DARTS supernet's precision handling, parameter split and forward (autocast,
    channels-last); builds its own layers.
    """

    def __init__(self, relax, C: int, N: int, num_classes: int, in_channels: int = 3, precision: str = "auto"):
        nn.Module.__init__(self)
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.relax, self.precision, self._autocast_off = relax, precision, 0
        self.stem = stem(in_channels, C)
        layers, cells = [], []
        c_prev = C
        for c, reduction in stage_plan(C, N):
            if reduction:
                layers.append(ResNetBasicBlock(c_prev, c))
            else:
                cells.append(SearchCell(c, len(cells), relax))
                layers.append(cells[-1])
            c_prev = c
        self.layers = nn.ModuleList(layers)
        self.cells = cells  # (registered through layers)
        self.lastact, self.classifier = head(c_prev, num_classes)
        relax.cells_built(self.cell_keys())

    def _forward(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x, self.relax.mixing("normal", layer.index)) if isinstance(layer, SearchCell) else layer(x)
        return self.classifier(F.adaptive_avg_pool2d(self.lastact(x), 1).flatten(1))

    def edge_parameters(self) -> dict:
        return {(cell.index, e): list(edge.parameters()) for cell in self.cells for e, edge in enumerate(cell.edges)}

    def shared_parameters(self) -> dict:
        """The weights of no edge, by what they feed: {"classifier": the head, cell index: the stem (first cell)
        or the reduction block right before that cell}."""
        shared = {"classifier": [*self.lastact.parameters(), *self.classifier.parameters()]}
        before = list(self.stem.parameters())
        for layer in self.layers:
            if isinstance(layer, SearchCell):
                shared[layer.index], before = before, []
            else:
                before = list(layer.parameters())
        return shared

    def edge_shapes(self, input_shape) -> list:
        raise NotImplementedError("the nb201 space has no latency table (it does not provide edge-shapes)")
