"""Pictures of a genotype's cells: the classic DARTS drawing, rendered with Graphviz.

Every state is labelled with the number the genotype's text and JSON use for it (one
numbering everywhere): the inputs ``0`` (``c_{k-2}``) and ``1`` (``c_{k-1}``) on the left,
intermediate nodes ``2 .. n+1`` in the middle, the output ``c_{k}`` on the right; every edge
carries its op name, coloured per op. The same op
colours are used by the weight plots in :mod:`diffnas.report.plots`.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from ...errors import DiffnasError
from .space import CELL_TYPES

# One fixed, distinct colour per known op so that the same op looks the same in every picture.
OP_COLORS = {
    "none": "#9e9e9e",
    "max_pool_3x3": "#1f77b4",
    "max_pool_5x5": "#17becf",
    "max_pool_7x7": "#393b79",
    "avg_pool_3x3": "#9467bd",
    "skip_connect": "#2ca02c",
    "sep_conv_3x3": "#d62728",
    "sep_conv_5x5": "#ff7f0e",
    "sep_conv_7x7": "#8c564b",
    "dil_conv_3x3": "#e377c2",
    "dil_conv_5x5": "#bcbd22",
    "conv_1x1": "#7b4173",
    "conv_3x3": "#5254a3",
    "conv_3x1_1x3": "#008b8b",
}
_FALLBACK = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


def op_color(op: str) -> str:
    """The colour of ``op``: a fixed one for known ops, a stable one derived from the name otherwise."""
    if op in OP_COLORS:
        return OP_COLORS[op]
    return _FALLBACK[zlib.crc32(op.encode()) % len(_FALLBACK)]


def op_colors(ops) -> dict:
    """Colours for a list of ops, distinct within the list (falls back to a palette by index on a clash)."""
    colors = {op: op_color(op) for op in ops}
    if len(set(colors.values())) < len(colors):
        import matplotlib

        cmap = matplotlib.colormaps["tab20" if len(colors) > 10 else "tab10"]
        colors = {op: matplotlib.colors.to_hex(cmap(i % cmap.N)) for i, op in enumerate(colors)}
    return colors


def import_graphviz():
    try:
        import graphviz
    except ImportError:
        raise DiffnasError("the 'graphviz' Python package is needed to draw cells: pip install graphviz") from None
    return graphviz


def _state_name(j: int) -> str:
    """The label of state ``j``: its number in the genotype's text (``sep_conv_3x3(2)`` reads state 2)."""
    return {0: "0: c_{k-2}", 1: "1: c_{k-1}"}.get(j, str(j))


def cell_graph(genotype, cell_type: str):
    """The ``graphviz.Digraph`` of one cell of ``genotype``."""
    graphviz = import_graphviz()

    edges = genotype.cells[cell_type]
    nodes = genotype.nodes
    if not edges or len(edges) % nodes:
        raise DiffnasError(f"{cell_type} cell has {len(edges)} edges, not a multiple of {nodes} nodes")
    k = len(edges) // nodes

    g = graphviz.Digraph(
        name=f"{cell_type}_cell",
        engine="dot",
        graph_attr={"rankdir": "LR", "label": f"{cell_type} cell", "labelloc": "t", "fontsize": "20"},
        node_attr={
            "style": "filled",
            "shape": "rect",
            "fontsize": "18",
            "height": "0.5",
            "width": "0.5",
            "penwidth": "2",
            "fontname": "Helvetica",
        },
        edge_attr={"fontsize": "14", "fontname": "Helvetica", "penwidth": "1.5"},
    )
    # node ids are plain; the labels carry the DARTS names
    ids = {0: "in0", 1: "in1", **{2 + i: f"n{i}" for i in range(nodes)}}
    g.node("in0", label=_state_name(0), fillcolor="darkseagreen2")
    g.node("in1", label=_state_name(1), fillcolor="darkseagreen2")
    with g.subgraph(name="inputs") as s:
        s.attr(rank="same")
        s.node("in0")
        s.node("in1")
    for i in range(nodes):
        g.node(f"n{i}", label=_state_name(2 + i), fillcolor="lightblue")
    g.node("out", label="c_{k}", fillcolor="palegoldenrod")

    for idx, (op, j) in enumerate(edges):
        node = idx // k
        if not 0 <= j < 2 + node:
            raise DiffnasError(f"{cell_type} node {node} reads input {j}, must be in [0, {1 + node}]")
        color = op_color(op)
        g.edge(ids[j], f"n{node}", label=op, color=color, fontcolor=color)
    for i in genotype.concat[cell_type]:
        if i not in ids:
            raise DiffnasError(f"{cell_type}_concat index {i} out of range [0, {1 + nodes}]")
        g.edge(ids[i], "out", color="gray40")
    return g


def draw_genotype(genotype, out_dir, stem: str = "genotype") -> list[Path]:
    """Draw the normal and reduction cells of ``genotype`` (a Genotype, a genotype.json or a run directory).

    Writes ``{stem}_{cell}.dot``, ``.png`` and ``.svg`` for each cell type into ``out_dir`` and
    returns the paths written. Raises DiffnasError (after writing the .dot sources) when the
    Graphviz ``dot`` executable is missing.
    """
    from .genotype import Genotype

    if not isinstance(genotype, Genotype):
        genotype = Genotype.load(genotype)
    return render_graphs({t: cell_graph(genotype, t) for t in CELL_TYPES}, out_dir, stem)


def render_graphs(graphs: dict, out_dir, stem: str) -> list[Path]:
    """Write ``{stem}_{name}.dot``, ``.png`` and ``.svg`` for each ``graphviz`` graph; the paths written."""
    graphviz = import_graphviz()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for t, g in graphs.items():  # sources first, so they exist even if rendering fails
        src = out_dir / f"{stem}_{t}.dot"
        src.write_text(g.source)
        written.append(src)
    for t, g in graphs.items():
        for fmt in ("png", "svg"):
            path = out_dir / f"{stem}_{t}.{fmt}"
            try:
                data = g.pipe(format=fmt)
            except graphviz.ExecutableNotFound:
                raise DiffnasError(
                    "cannot render cell pictures: the Graphviz 'dot' executable is not on PATH; "
                    "install graphviz (e.g. `apt-get install graphviz`, `brew install graphviz` or "
                    f"`conda install graphviz`); the DOT sources are in {out_dir}/{stem}_*.dot"
                ) from None
            except graphviz.CalledProcessError as e:
                err = (e.stderr or b"").decode(errors="replace").strip().splitlines()
                raise DiffnasError(f"Graphviz 'dot' failed to render {path.name}: {err[0] if err else e}") from None
            path.write_bytes(data)
            written.append(path)
    return written
