"""Cell search spaces: which ops each cell type chooses from, and the cell topology.

A space is data, not a model: the supernet and the derived network read it.
Cells have ``nodes`` intermediate nodes; node ``i`` has ``2 + i`` incoming edges
(from the two cell inputs and every earlier node), numbered in that order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ConfigError
from .ops import OPS

CELL_TYPES = ("normal", "reduce")

DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


@dataclass(frozen=True)
class Space:
    name: str
    ops: dict  # cell type -> tuple of op names
    nodes: int = 4
    edges_per_node: int = 2  # kept incoming edges per node in a genotype

    def __post_init__(self):
        for cell_type, names in self.ops.items():
            unknown = [n for n in names if n not in OPS]
            if unknown:
                raise ConfigError(f"space {self.name}: unknown ops {unknown} in {cell_type} cells")
        if self.nodes < 1:
            raise ConfigError(f"space {self.name}: nodes must be >= 1, got {self.nodes}")

    @property
    def num_edges(self) -> int:
        return sum(2 + i for i in range(self.nodes))

    def edge_inputs(self):
        """(node, input) for every edge, in edge order."""
        return [(node, j) for node in range(self.nodes) for j in range(2 + node)]

    def node_edges(self, node: int) -> range:
        """Edge indices of the edges entering ``node``."""
        start = sum(2 + i for i in range(node))
        return range(start, start + 2 + node)

    def has_none(self, cell_type: str) -> bool:
        return "none" in self.ops[cell_type]

    def with_nodes(self, nodes: int) -> Space:
        return replace(self, nodes=nodes)


def _same(ops):
    return {"normal": tuple(ops), "reduce": tuple(ops)}


SPACES = {
    "darts": Space("darts", _same(DARTS_OPS)),
    # DARTS without `none`: NASP's small space and DARTS-PRIME's CRB
    "darts-nonone": Space("darts-nonone", _same(DARTS_OPS[1:])),
    "nasp12": Space(
        "nasp12",
        {
            "normal": (
                "skip_connect",
                "conv_3x1_1x3",
                "dil_conv_3x3",
                "conv_1x1",
                "conv_3x3",
                "sep_conv_3x3",
                "sep_conv_5x5",
                "sep_conv_7x7",
            ),
            "reduce": ("skip_connect", "avg_pool_3x3", "max_pool_3x3", "max_pool_5x5", "max_pool_7x7"),
        },
    ),
}

SPACE_HELP = {
    "darts": "DARTS CNN cell: 8 ops incl. none, 4 nodes, 14 edges (DARTS, DARTS-CD, PC-DARTS, RARTS)",
    "darts-nonone": "DARTS CNN cell without none: 7 ops (NASP, DARTS-PRIME's CRB)",
    "nasp12": "NASP's larger space: 8 normal ops, 5 reduction ops",
}


def get_space(name: str, nodes: int | None = None) -> Space:
    if name not in SPACES:
        raise ConfigError(f"unknown space '{name}'; choose from {', '.join(SPACES)}")
    space = SPACES[name]
    return space.with_nodes(nodes) if nodes else space
