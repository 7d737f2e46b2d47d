"""The network a NAS-Bench-201 cell is trained as (the public ``TinyNetwork`` with ``InferCell``s)."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from .architecture import NODES, Nb201Architecture, node_edges
from .ops import ResNetBasicBlock, head, make_op, stage_plan, stem


class Cell(nn.Module):
    """Node i = sum over j < i of op_(i<-j)(node j), affine BN, no conv bias; a `none` edge adds zero."""

    def __init__(self, architecture: Nb201Architecture, C: int):
        super().__init__()
        self.edges = architecture.edges()
        self.layers = nn.ModuleList(make_op(op, C, affine=True) for _, _, op in self.edges)

    def forward(self, x):
        nodes = [x]
        for i in range(1, NODES):
            nodes.append(sum(self.layers[e](nodes[self.edges[e][1]]) for e in node_edges(i)))
        return nodes[-1]


class Nb201Network(nn.Module):
    def __init__(self, architecture: Nb201Architecture, C: int, N: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.stem = stem(in_channels, C)
        layers, c_prev = [], C
        for c, reduction in stage_plan(C, N):
            layers.append(ResNetBasicBlock(c_prev, c) if reduction else Cell(architecture, c))
            c_prev = c
        self.cells = nn.ModuleList(layers)
        self.lastact, self.classifier = head(c_prev, num_classes)
        self.drop_prob = 0.0  # (no drop path in the benchmark's protocol; the engine sets it)

    def forward(self, x):
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.classifier(F.adaptive_avg_pool2d(self.lastact(x), 1).flatten(1))
