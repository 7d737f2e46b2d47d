"""Genotypes: the discrete architecture a search ends with, and the rule that derives it.

The DARTS rule: for every intermediate node keep the ``k`` incoming edges with the
largest max weight over non-`none` ops; on each kept edge take the argmax
non-`none` op. ``discrete_mask`` is the same rule as a binary [E, O] mask, the
projection Pi_S used by proximity regularization, ADMM and NASP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...errors import GenotypeError
from ..base import Architecture, read_json
from .space import CELL_TYPES, DartsCellSpace


@dataclass
class Genotype(Architecture):
    space: str
    nodes: int
    # cell type -> [(op, input index)] with edges_per_node entries per node, node by node
    cells: dict = field(default_factory=dict)
    # cell type -> indices of the states concatenated into the cell output
    concat: dict = field(default_factory=dict)

    def edges(self, cell_type: str, node: int):
        k = len(self.cells[cell_type]) // self.nodes
        return self.cells[cell_type][node * k : (node + 1) * k]

    def to_dict(self) -> dict:
        out = {"space": self.space, "nodes": self.nodes}
        for t in CELL_TYPES:
            out[t] = [[op, j] for op, j in self.cells[t]]
            out[f"{t}_concat"] = list(self.concat[t])
        return out

    @classmethod
    def from_dict(cls, d: dict, source: str = "genotype") -> Genotype:
        from .. import get_space  # the registry imports this module

        try:
            space = get_space(d["space"], _index(d["nodes"], "nodes", source, low=1))
            if not isinstance(space, DartsCellSpace):
                raise GenotypeError(f"{source}: space {space.name} has no DARTS cells")
            cells = {t: [(str(op), _index(j, f"{t} input", source)) for op, j in d[t]] for t in CELL_TYPES}
            concat = {
                t: [_index(i, f"{t}_concat", source) for i in d.get(f"{t}_concat", range(2, 2 + space.nodes))]
                for t in CELL_TYPES
            }
        except GenotypeError:
            raise
        except Exception as e:  # missing keys, wrong types
            raise GenotypeError(f"{source}: not a valid genotype ({type(e).__name__}: {e})") from None
        g = cls(space.name, space.nodes, cells, concat)
        g.validate(space, source)
        return g

    def validate(self, space: DartsCellSpace, source: str = "genotype"):
        for t in CELL_TYPES:
            edges = self.cells[t]
            if len(edges) % self.nodes or not edges:
                raise GenotypeError(f"{source}: {t} cell has {len(edges)} edges, not a multiple of {self.nodes} nodes")
            k = len(edges) // self.nodes
            for i, (op, j) in enumerate(edges):
                node = i // k
                if op not in space.ops[t] or op == "none":
                    raise GenotypeError(
                        f"{source}: unknown op '{op}' in {t} cell of space {space.name}; "
                        f"expected one of {[o for o in space.ops[t] if o != 'none']}"
                    )
                if not 0 <= j < 2 + node:
                    raise GenotypeError(f"{source}: {t} node {node} reads input {j}, must be in [0, {1 + node}]")
            for i in self.concat[t]:
                if not 0 <= i < 2 + self.nodes:
                    raise GenotypeError(f"{source}: {t}_concat index {i} out of range [0, {1 + self.nodes}]")

    @classmethod
    def load(cls, path) -> Genotype:
        d, source = read_json(path)
        return cls.from_dict(d, source)

    def draw(self, out_dir, stem: str = "genotype") -> list[Path]:
        from .drawing import draw_genotype

        return draw_genotype(self, out_dir, stem)

    def graphs(self) -> dict:
        from .drawing import cell_graph

        return {f"{t} cell": cell_graph(self, t) for t in CELL_TYPES}

    def cell_ops(self) -> dict:
        return {t: [op for op, _ in self.cells[t]] for t in CELL_TYPES}

    def short(self) -> str:
        """``N sep3(0) sep3(1) | ... R ...``: the cells with short op names, inputs numbered as in ``str``."""
        cells = []
        for t in CELL_TYPES:
            k = len(self.cells[t]) // self.nodes
            nodes = [" ".join(f"{_short_op(op)}({j})" for op, j in self.edges(t, n)) for n in range(self.nodes)]
            cells.append(f"{t[0].upper()} " + " | ".join(nodes) if k else t)
        return "  ".join(cells)

    def __str__(self):
        lines = []
        for t in CELL_TYPES:
            k = len(self.cells[t]) // self.nodes
            nodes = [
                " + ".join(f"{op}({j})" for op, j in self.cells[t][n * k : (n + 1) * k]) for n in range(self.nodes)
            ]
            lines.append(f"{t:7s}: " + " | ".join(nodes))
        return "\n".join(lines)


def _short_op(op: str) -> str:
    """``sep_conv_3x3`` -> ``sep3``, ``max_pool_3x3`` -> ``max3``, ``skip_connect`` -> ``skip``."""
    if op == "skip_connect":
        return "skip"
    return re.sub(r"_(conv|pool)_(\d)x\d$", r"\2", op)


def _index(value, what: str, source: str, low: int = 0) -> int:
    """A node count or index as written: ``1.5`` or ``"0"`` is a broken file, not the int it would round to."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise GenotypeError(f"{source}: {what} must be an integer >= {low}, got {value!r}")
    return value


def _ranked(values: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Indices of ``values`` from largest to smallest; exact ties in random order if a generator is given."""
    if generator is None:
        return torch.argsort(values, descending=True, stable=True)
    perm = torch.randperm(values.numel(), generator=generator)
    return perm[torch.argsort(values[perm], descending=True, stable=True)]


def discrete_mask(
    space: DartsCellSpace, cell_type: str, weights: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Binary [E, O] mask of the DARTS rule: k best edges per node, best non-`none` op per kept edge."""
    w = weights.detach().float().cpu()
    ops = space.ops[cell_type]
    allowed = torch.tensor([op != "none" for op in ops])
    masked = w.masked_fill(~allowed, float("-inf"))
    mask = torch.zeros_like(w)
    for node in range(space.nodes):
        edges = list(space.node_edges(node))
        best_op = [int(_ranked(masked[e], generator)[0]) for e in edges]
        scores = torch.stack([masked[e, o] for e, o in zip(edges, best_op)])
        for i in _ranked(scores, generator)[: space.edges_per_node].tolist():
            mask[edges[i], best_op[i]] = 1.0
    return mask.to(weights.device)


def genotype_from_masks(space: DartsCellSpace, masks: dict) -> Genotype:
    cells = {}
    for t in CELL_TYPES:
        edges = []
        for node in range(space.nodes):
            for e in space.node_edges(node):
                for o in torch.nonzero(masks[t][e]).flatten().tolist():
                    edges.append((space.ops[t][o], e - space.node_edges(node).start))
        cells[t] = edges
    concat = {t: list(range(2, 2 + space.nodes)) for t in CELL_TYPES}
    return Genotype(space.name, space.nodes, cells, concat)


def derive_genotype(space: DartsCellSpace, weights: dict, generator: torch.Generator | None = None) -> Genotype:
    """The DARTS rule applied to per-cell-type [E, O] weights (softmax(alpha) for DARTS)."""
    return genotype_from_masks(space, {t: discrete_mask(space, t, weights[t], generator) for t in CELL_TYPES})


def random_genotype(space: DartsCellSpace, rng) -> Genotype:
    """A uniformly random genotype (see ``DartsCellSpace.random_architecture``), drawn from ``rng`` only."""
    cells = {}
    for t in CELL_TYPES:
        ops = [op for op in space.ops[t] if op != "none"]
        cells[t] = [
            (rng.choice(ops), j)
            for node in range(space.nodes)
            for j in sorted(rng.sample(range(2 + node), min(space.edges_per_node, 2 + node)))
        ]
    concat = {t: list(range(2, 2 + space.nodes)) for t in CELL_TYPES}
    return Genotype(space.name, space.nodes, cells, concat)


def genotype_masks(space: DartsCellSpace, genotype: Genotype) -> dict:
    """{cell type: binary [E, O] mask of the genotype's (edge, op) choices}: the inverse of ``genotype_from_masks``."""
    masks = {}
    for t in CELL_TYPES:
        m = torch.zeros(space.alpha_shape(t))
        for node in range(space.nodes):
            for op, j in genotype.edges(t, node):
                m[space.node_edges(node).start + j, space.ops[t].index(op)] = 1.0
        masks[t] = m
    return masks


# DARTS's published CIFAR-10 cell (DARTS-V2, second order; quark0/darts genotypes.py): the golden genotype
DARTS_V2 = Genotype(
    space="darts",
    nodes=4,
    cells={
        "normal": [
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("skip_connect", 0),
            ("dil_conv_3x3", 2),
        ],
        "reduce": [
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 1),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
            ("max_pool_3x3", 0),
            ("skip_connect", 2),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
        ],
    },
    concat={"normal": [2, 3, 4, 5], "reduce": [2, 3, 4, 5]},
)
