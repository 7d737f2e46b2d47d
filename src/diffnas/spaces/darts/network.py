"""The network built from a genotype, retrained from scratch (DARTS's evaluation network).

Also holds what the supernet shares with it: the stem, the cell plan (where the
reductions are and how channels grow) and the preprocessing of the cell inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .genotype import Genotype
from .ops import OPS, FactorizedReduce, ReLUConvBN


@dataclass(frozen=True)
class CellSpec:
    index: int
    reduction: bool
    reduction_prev: bool
    c_prev_prev: int
    c_prev: int
    c: int


def reduction_indices(layers: int) -> tuple[int, ...]:
    return tuple(sorted({layers // 3, 2 * layers // 3}))


def cell_plan(layers: int, channels: int, stem_multiplier: int, cell_out_multiplier) -> list[CellSpec]:
    """Channel bookkeeping of a DARTS stack: reductions at L/3 and 2L/3 double the width.

    ``cell_out_multiplier(spec)`` says how many C-wide states a cell concatenates.
    """
    c_stem = stem_multiplier * channels
    c_pp, c_p, c = c_stem, c_stem, channels
    reductions = reduction_indices(layers)
    specs, red_prev = [], False
    for i in range(layers):
        red = i in reductions
        if red:
            c *= 2
        spec = CellSpec(i, red, red_prev, c_pp, c_p, c)
        specs.append(spec)
        c_pp, c_p, red_prev = c_p, cell_out_multiplier(spec) * c, red
    return specs


def make_stem(in_channels: int, out_channels: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels))


def make_preprocess(spec: CellSpec, affine: bool) -> tuple[nn.Module, nn.Module]:
    pre0 = (
        FactorizedReduce(spec.c_prev_prev, spec.c, affine)
        if spec.reduction_prev
        else ReLUConvBN(spec.c_prev_prev, spec.c, 1, 1, 0, affine)
    )
    return pre0, ReLUConvBN(spec.c_prev, spec.c, 1, 1, 0, affine)


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob``, rescaling the rest."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class DerivedCell(nn.Module):
    def __init__(self, genotype: Genotype, spec: CellSpec):
        super().__init__()
        self.cell_type = "reduce" if spec.reduction else "normal"
        self.pre0, self.pre1 = make_preprocess(spec, affine=True)
        edges = genotype.cells[self.cell_type]
        self.per_node = len(edges) // genotype.nodes
        self.inputs = [j for _, j in edges]
        self.ops = nn.ModuleList(OPS[op](spec.c, 2 if spec.reduction and j < 2 else 1, True) for op, j in edges)
        # drop path spares only the identity (as DARTS does); a stride-2 skip_connect is a FactorizedReduce
        self.identity = [isinstance(op, nn.Identity) for op in self.ops]
        self.concat = list(genotype.concat[self.cell_type])

    def forward(self, s0, s1, drop_prob: float = 0.0):
        states = [self.pre0(s0), self.pre1(s1)]
        k = self.per_node
        for n in range(len(self.ops) // k):
            total = 0
            for e in range(n * k, (n + 1) * k):
                h = self.ops[e](states[self.inputs[e]])
                if self.training and not self.identity[e]:
                    h = drop_path(h, drop_prob)
                total = total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class _AuxPool(nn.Module):
    """ReLU, then the 5x5 stride-3 average pool (8x8 -> 2x2 on CIFAR); smaller inputs are pooled adaptively to 2x2.

    The ReLU comes first as in DARTS (quark0/darts AuxiliaryHeadCIFAR).
    """

    def forward(self, x):
        x = F.relu(x)
        if x.shape[-1] >= 5:
            x = F.avg_pool2d(x, 5, stride=3, count_include_pad=False)
        return F.adaptive_avg_pool2d(x, 2)


class AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier; pools to 2x2 whatever the input size (8x8 on CIFAR as in the paper)."""

    def __init__(self, c_in: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            _AuxPool(),  # index 0 holds no parameters: state-dict keys as before
            nn.Conv2d(c_in, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class DerivedNetwork(nn.Module):
    def __init__(
        self,
        genotype: Genotype,
        channels: int,
        layers: int,
        num_classes: int,
        in_channels: int = 3,
        auxiliary: bool = False,
        stem_multiplier: int = 3,
    ):
        super().__init__()
        self.drop_prob = 0.0
        plan = cell_plan(
            layers,
            channels,
            stem_multiplier,
            lambda s: len(genotype.concat["reduce" if s.reduction else "normal"]),
        )
        self.stem = make_stem(in_channels, stem_multiplier * channels)
        self.cells = nn.ModuleList(DerivedCell(genotype, s) for s in plan)
        self.aux_index = 2 * layers // 3
        c_last = plan[-1].c * len(genotype.concat["reduce" if plan[-1].reduction else "normal"])
        self.classifier = nn.Linear(c_last, num_classes)
        self.aux_head = None
        if auxiliary:
            s = plan[self.aux_index]
            c_aux = s.c * len(genotype.concat["reduce" if s.reduction else "normal"])
            self.aux_head = AuxiliaryHead(c_aux, num_classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_prob)
            if i == self.aux_index and self.aux_head is not None and self.training:
                aux = self.aux_head(s1)
        logits = self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        return (logits, aux) if self.training and self.aux_head is not None else logits
