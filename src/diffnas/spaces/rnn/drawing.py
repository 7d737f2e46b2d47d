"""A picture of a recurrent genotype: x_t and h_{t-1} into s0, one edge per node, the mean into h_t."""

from __future__ import annotations

from ..darts.drawing import import_graphviz, op_color, render_graphs


def cell_graph(genotype):
    graphviz = import_graphviz()
    g = graphviz.Digraph(
        name="recurrent_cell",
        graph_attr={"rankdir": "LR", "label": "recurrent cell", "labelloc": "t", "fontsize": "20"},
        node_attr={"style": "filled", "shape": "rect", "fontsize": "18", "fontname": "Helvetica"},
        edge_attr={"fontsize": "14", "fontname": "Helvetica", "penwidth": "1.5"},
    )
    g.node("x", label="x_{t}", fillcolor="darkseagreen2")
    g.node("h", label="h_{t-1}", fillcolor="darkseagreen2")
    g.node("s0", label="0", fillcolor="lightblue")
    g.edge("x", "s0", color="gray40")
    g.edge("h", "s0", color="gray40")
    for i, (op, j) in enumerate(genotype.recurrent, start=1):
        g.node(f"s{i}", label=str(i), fillcolor="lightblue")
        color = op_color(op)
        g.edge(f"s{j}", f"s{i}", label=op, color=color, fontcolor=color)
    g.node("out", label="h_{t} (mean)", fillcolor="palegoldenrod")
    for i in genotype.concat:
        g.edge(f"s{i}", "out", color="gray40")
    return g


def draw_genotype(genotype, out_dir, stem: str = "genotype"):
    return render_graphs({"recurrent": cell_graph(genotype)}, out_dir, stem)
