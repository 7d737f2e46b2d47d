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


def cell_plan(
    layers: int, channels: int, stem_multiplier: int, cell_out_multiplier, reduced_stem: bool = False
) -> list[CellSpec]:
    """Channel bookkeeping of a DARTS stack: reductions at L/3 and 2L/3 double the width.

    ``cell_out_multiplier(spec)`` says how many C-wide states a cell concatenates. ``reduced_stem``:
    the stem's first output is at twice the resolution of its second (the ImageNet stem), so the first
    cell reduces its first input as after a reduction cell.
    """
    c_stem = stem_multiplier * channels
    c_pp, c_p, c = c_stem, c_stem, channels
    reductions = reduction_indices(layers)
    specs, red_prev = [], reduced_stem
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


class ImageNetStem(nn.Module):
    """Three stride-2 3x3 convolutions, 224 -> 28: the cells' first input after two (56x56), the second
    after three (28x28), as in DARTS's and PC-DARTS's ImageNet networks."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half = out_channels // 2
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, half, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, out_channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x):
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


STEMS = ("cifar", "imagenet")


def build_stem(kind: str, in_channels: int, out_channels: int) -> nn.Module:
    """The stem of ``kind``: ``cifar`` (one 3x3 convolution, full resolution) or ``imagenet`` (``ImageNetStem``)."""
    if kind == "imagenet":
        return ImageNetStem(in_channels, out_channels)
    return make_stem(in_channels, out_channels)


def stem_states(stem: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two first cell inputs: the ImageNet stem gives two, the CIFAR stem one for both."""
    s = stem(x)
    return s if isinstance(s, tuple) else (s, s)


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


class _AuxPoolImageNet(nn.Module):
    """ReLU, then the 5x5 stride-2 average pool (7x7 -> 2x2 on ImageNet, quark0/darts AuxiliaryHeadImageNet)."""

    def forward(self, x):
        x = F.relu(x)
        if x.shape[-1] >= 5:
            x = F.avg_pool2d(x, 5, stride=2, count_include_pad=False)
        return F.adaptive_avg_pool2d(x, 2)


class AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier; pools to 2x2 whatever the input size (8x8 on CIFAR as in the paper).

    ``imagenet``: the ImageNet head, stride-2 pool and no BN after the 768-channel conv (the reference
    comments it out; its parameter count and behaviour follow it)."""

    def __init__(self, c_in: int, num_classes: int, imagenet: bool = False):
        super().__init__()
        self.features = nn.Sequential(
            _AuxPoolImageNet() if imagenet else _AuxPool(),  # index 0 holds no parameters: state-dict keys as before
            nn.Conv2d(c_in, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.Identity() if imagenet else nn.BatchNorm2d(768),
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
        stem_multiplier: int | None = None,
        stem: str = "cifar",
    ):
        """``stem``: ``cifar`` (stem_multiplier 3 by default) or ``imagenet`` (the mobile setting's network:
        three stride-2 convolutions to 28x28, stem_multiplier 1 by default, the ImageNet auxiliary head)."""
        super().__init__()
        self.drop_prob = 0.0
        imagenet = stem == "imagenet"
        if stem_multiplier is None:
            stem_multiplier = 1 if imagenet else 3
        plan = cell_plan(
            layers,
            channels,
            stem_multiplier,
            lambda s: len(genotype.concat["reduce" if s.reduction else "normal"]),
            reduced_stem=imagenet,
        )
        self.stem = build_stem(stem, in_channels, stem_multiplier * channels)
        self.cells = nn.ModuleList(DerivedCell(genotype, s) for s in plan)
        self.aux_index = 2 * layers // 3
        c_last = plan[-1].c * len(genotype.concat["reduce" if plan[-1].reduction else "normal"])
        self.classifier = nn.Linear(c_last, num_classes)
        self.aux_head = None
        if auxiliary:
            s = plan[self.aux_index]
            c_aux = s.c * len(genotype.concat["reduce" if s.reduction else "normal"])
            self.aux_head = AuxiliaryHead(c_aux, num_classes, imagenet=imagenet)

    def forward(self, x):
        s0, s1 = stem_states(self.stem, x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_prob)
            if i == self.aux_index and self.aux_head is not None and self.training:
                aux = self.aux_head(s1)
        logits = self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        return (logits, aux) if self.training and self.aux_head is not None else logits
