"""A NAS-Bench-201 cell: one op per edge, written as the benchmark's string, and the rule that derives it.

Edges in the benchmark's order (its ``"i<-j"`` keys, sorted): 1<-0, 2<-0, 2<-1, 3<-0,
3<-1, 3<-2. The string writes node by node ``|op~j|`` for every input j, nodes joined by
``+``: ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import GenotypeError
from ..base import Architecture
from .ops import NB201_OPS

NODES = 4  # node 0 is the cell input, node 3 its output
EDGES = tuple((i, j) for i in range(1, NODES) for j in range(i))  # (node, input) per edge, the benchmark's order


def node_edges(node: int) -> range:
    """Edge indices entering ``node`` (1..3)."""
    start = sum(range(node))
    return range(start, start + node)


@dataclass(frozen=True)
class Nb201Architecture(Architecture):
    ops: tuple  # one op name per edge, in EDGES order
    space: str = "nb201"

    @classmethod
    def from_string(cls, text: str, source: str = "architecture") -> Nb201Architecture:
        """Parse the benchmark's string; anything else is a one-line GenotypeError."""
        example = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
        if not isinstance(text, str):
            raise GenotypeError(f"{source}: a NAS-Bench-201 architecture is a string like {example}, got {text!r}")
        nodes = text.strip().split("+")
        if len(nodes) != NODES - 1:
            raise GenotypeError(f"{source}: {text!r} has {len(nodes)} nodes, expected {NODES - 1} ({example})")
        ops = []
        for i, node in enumerate(nodes, start=1):
            if not (node.startswith("|") and node.endswith("|")) or len(node) < 2:
                raise GenotypeError(f"{source}: node {i} of {text!r} is not enclosed in | | ({example})")
            entries = node[1:-1].split("|")
            if len(entries) != i:
                raise GenotypeError(f"{source}: node {i} of {text!r} has {len(entries)} inputs, expected {i}")
            for j, entry in enumerate(entries):
                op, sep, inp = entry.partition("~")
                if not sep or inp != str(j):
                    raise GenotypeError(f"{source}: node {i} entry {entry!r} of {text!r} should read op~{j}")
                if op not in NB201_OPS:
                    raise GenotypeError(f"{source}: unknown op {op!r} in {text!r}; expected one of {list(NB201_OPS)}")
                ops.append(op)
        return cls(tuple(ops))

    def __str__(self) -> str:
        return "+".join(
            "|" + "|".join(f"{self.ops[e]}~{EDGES[e][1]}" for e in node_edges(i)) + "|" for i in range(1, NODES)
        )

    def to_dict(self) -> dict:
        return {"space": self.space, "arch": str(self)}

    @classmethod
    def from_dict(cls, d: dict, source: str = "genotype") -> Nb201Architecture:
        if d.get("space") != "nb201":
            raise GenotypeError(f"{source}: space {d.get('space')!r} is not nb201")
        if "arch" not in d:
            raise GenotypeError(f"{source}: no 'arch' entry (the NAS-Bench-201 string)")
        return cls.from_string(d["arch"], source)

    def edges(self) -> list[tuple[int, int, str]]:
        """(node, input, op) per edge."""
        return [(i, j, op) for (i, j), op in zip(EDGES, self.ops)]

    def count(self, op: str) -> int:
        return sum(o == op for o in self.ops)

    def cell_ops(self) -> dict:
        return {"normal": list(self.ops)}

    def graphs(self) -> dict:
        """The cell as a graphviz graph; `none` edges (cut) are left out."""
        from ..darts.drawing import import_graphviz, op_color

        g = import_graphviz().Digraph(
            name="cell",
            graph_attr={"rankdir": "LR", "label": str(self), "labelloc": "t", "fontsize": "14"},
            node_attr={"style": "filled", "shape": "circle", "fontname": "Helvetica", "fillcolor": "lightblue"},
            edge_attr={"fontname": "Helvetica", "fontsize": "12"},
        )
        for n in range(NODES):
            color = "darkseagreen2" if n == 0 else "palegoldenrod" if n == NODES - 1 else "lightblue"
            g.node(str(n), fillcolor=color)
        for i, j, op in self.edges():
            if op != "none":
                g.edge(str(j), str(i), label=op, color=op_color(op), fontcolor=op_color(op))
        return {"cell": g}

    def draw(self, out_dir, stem: str = "genotype") -> list[Path]:
        """``{stem}_cell.dot``, ``.png`` and ``.svg`` in ``out_dir``."""
        from ..darts.drawing import render_graphs

        return render_graphs(self.graphs(), out_dir, stem)


def best_ops(weights: torch.Tensor, allowed: torch.Tensor, generator: torch.Generator | None = None) -> list[int]:
    """Per row of ``weights`` [E, O], the index of the largest allowed entry; exact ties in random order
    when a generator is given (else the first)."""
    w = weights.detach().float().cpu().masked_fill(~allowed.cpu(), float("-inf"))
    if generator is None:
        return w.argmax(1).tolist()
    perm = torch.randperm(w.shape[1], generator=generator)
    return [int(perm[torch.argmax(row[perm])]) for row in w]
