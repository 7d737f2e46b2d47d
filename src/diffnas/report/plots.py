"""Plots read back from a search run directory, so they can be made after the fact and for many runs.

The search appends one JSON object per epoch to ``RUN_DIR/metrics.jsonl`` with ``epoch``,
``arch_weights`` ({cell type: [E][O] op weights}), ``ops`` ({cell type: [op names]}) and
scalars such as ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``.

Figures are drawn on ``matplotlib.figure.Figure`` objects directly (the Agg canvas), never through
``pyplot``, so importing this module does not change matplotlib's global backend or open windows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..errors import DiffnasError
from ..spaces.darts.drawing import op_colors

METRICS_FILE = "metrics.jsonl"
SPLITS = ("train", "val", "test")
_SPLIT_STYLE = {"train": "-", "val": "--", "test": ":"}
_SPLIT_COLOR = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}


def _metrics_path(run_dir) -> Path:
    p = Path(run_dir)
    return p if p.suffix == ".jsonl" or p.is_file() else p / METRICS_FILE


def read_metrics(run_dir) -> list[dict]:
    """The records of ``RUN_DIR/metrics.jsonl`` (or of a .jsonl file given directly), in file order.

    Blank lines are skipped. Raises DiffnasError naming the file (and line) if the file is missing
    or a line is not a JSON object.
    """
    path = _metrics_path(run_dir)
    if not path.is_file():
        raise DiffnasError(f"{path}: no such metrics file (is {path.parent} a search run directory?)")
    records = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DiffnasError(f"{path}, line {lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise DiffnasError(f"{path}, line {lineno}: expected a JSON object, got {type(rec).__name__}")
            records.append(rec)
    return records


def _by_epoch(records: list[dict]) -> list[tuple[float, dict]]:
    """(epoch, record) sorted by epoch; for a repeated epoch (a resumed run) the last record wins."""
    out = {}
    for i, rec in enumerate(records):
        epoch = rec.get("epoch", i)
        try:
            epoch = float(epoch)
        except (TypeError, ValueError):
            epoch = float(i)
        out[epoch] = rec
    return sorted(out.items(), key=lambda kv: kv[0])


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _edge_labels(num_edges: int) -> tuple[list[str], list[tuple[int, int]]]:
    """Title and (row, col) grid position per edge; row = node, col = input when E fits a cell."""
    nodes, total = 0, 0
    while total < num_edges:
        total += 2 + nodes
        nodes += 1
    if total == num_edges:
        names = {0: "c_{k-2}", 1: "c_{k-1}"}
        labels, pos = [], []
        for node in range(nodes):
            for j in range(2 + node):
                labels.append(f"node {node} \u2190 {names.get(j, f'node {j - 2}')}")
                pos.append((node, j))
        return labels, pos
    ncols = math.ceil(math.sqrt(num_edges))
    return [f"edge {e}" for e in range(num_edges)], [(e // ncols, e % ncols) for e in range(num_edges)]


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_arch_weights(run_dir, out=None) -> list[Path]:
    """One PNG per cell type of each op's weight over epochs, one subplot per edge.

    Written as ``arch_weights_{cell}.png`` into ``out`` (a directory; default: the run directory).
    """
    run_dir = Path(run_dir)
    path = _metrics_path(run_dir)
    out_dir = Path(out) if out is not None else path.parent
    rows = [(ep, rec) for ep, rec in _by_epoch(read_metrics(run_dir)) if isinstance(rec.get("arch_weights"), dict)]
    if not rows:
        raise DiffnasError(f"{path}: no line has 'arch_weights'; nothing to plot")
    cell_types = list(dict.fromkeys(t for _, rec in rows for t in rec["arch_weights"]))  # as logged, in order
    cell_types += sorted({t for _, rec in rows for t in rec["arch_weights"]} - set(cell_types))

    written = []
    for cell in cell_types:
        series = [
            (ep, rec["arch_weights"][cell], rec.get("ops") or {}) for ep, rec in rows if cell in rec["arch_weights"]
        ]
        shape = None
        for ep, w, _ in series:
            ok = isinstance(w, list) and w and all(isinstance(r, list) for r in w) and len({len(r) for r in w}) == 1
            if not ok:
                raise DiffnasError(f"{path}: epoch {ep:g}: arch_weights[{cell!r}] is not an [edges][ops] list")
            if shape is None:
                shape = (len(w), len(w[0]))
            elif (len(w), len(w[0])) != shape:
                raise DiffnasError(
                    f"{path}: epoch {ep:g}: arch_weights[{cell!r}] is {len(w)}x{len(w[0])}, "
                    f"earlier lines {shape[0]}x{shape[1]}"
                )
        num_edges, num_ops = shape
        ops = next((o[cell] for _, _, o in reversed(series) if isinstance(o.get(cell), list)), None)
        if ops is None or len(ops) != num_ops:
            ops = [f"op {i}" for i in range(num_ops)]
        colors = op_colors(ops)

        labels, pos = _edge_labels(num_edges)
        nrows = max(r for r, _ in pos) + 1
        ncols = max(c for _, c in pos) + 1
        # fixed margins in inches (constrained layout is several times slower on a grid this size)
        width = max(2.8 * ncols + 0.8, 8.0)
        legend_cols = max(1, min(len(ops), int((width - 0.5) // 1.6)))
        legend_rows = math.ceil(len(ops) / legend_cols)
        top, bottom, left, right = 0.75 + 0.28 * legend_rows, 0.55, 0.7, 0.2
        height = 2.1 * nrows + top + bottom
        fig = Figure(figsize=(width, height))
        fig.subplots_adjust(
            left=left / width,
            right=1 - right / width,
            bottom=bottom / height,
            top=1 - top / height,
            wspace=0.12,
            hspace=0.38,
        )
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
        used = set(pos)
        for r in range(nrows):
            for c in range(ncols):
                if (r, c) not in used:
                    fig.delaxes(axes[r][c])
        epochs = [ep for ep, _, _ in series]
        marker = "o" if len(epochs) <= 25 else None
        for e, (label, (r, c)) in enumerate(zip(labels, pos, strict=True)):
            ax = axes[r][c]
            for o, op in enumerate(ops):
                ax.plot(
                    epochs,
                    [_num(w[e][o]) for _, w, _ in series],
                    color=colors[op],
                    lw=1.4,
                    marker=marker,
                    ms=2.5,
                    label=op,
                )
            ax.set_title(label, fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
            # shared x axes hide inner tick labels; re-show them where no subplot sits below
            if r + 1 == nrows or (r + 1, c) not in used:
                ax.xaxis.set_tick_params(labelbottom=True)
                ax.set_xlabel("epoch", fontsize=8)
            if c == 0:
                ax.set_ylabel("weight", fontsize=8)
        if min(epochs) == max(epochs):  # a single epoch: keep integer ticks around it
            axes[0][0].set_xlim(epochs[0] - 1, epochs[0] + 1)
        handles = [Line2D([], [], color=colors[op], lw=2.5, label=op) for op in ops]
        fig.suptitle(
            f"{path.parent.resolve().name}: {cell} cell op weights", fontsize=12, y=1 - 0.12 / height, va="top"
        )
        fig.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, 1 - 0.45 / height),
            ncols=legend_cols,
            fontsize=9,
            frameon=False,
        )
        written.append(_save(fig, out_dir / f"arch_weights_{cell}.png"))
    return written


def _run_labels(paths: list[Path]) -> list[str]:
    """Directory names, with the parent prepended where names clash (runs/a/seed0 vs runs/b/seed0)."""
    names = [p.name for p in paths]
    labels = []
    for p, name in zip(paths, names, strict=True):
        labels.append(f"{p.parent.name}/{name}" if names.count(name) > 1 and p.parent.name else name)
    return labels


def plot_curves(run_dirs, out) -> Path:
    """Loss and accuracy curves over epochs of one or several runs in one PNG (2 subplots).

    ``run_dirs``: a run directory or a list of them. ``out``: the PNG path (or an existing directory,
    which gets ``curves.png``). Absent keys are skipped; a run with none of them is an error.
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise DiffnasError("plot_curves: no run directories given")
    out = Path(out)
    if out.is_dir():
        out = out / "curves.png"
    paths = [_metrics_path(d) for d in run_dirs]
    run_paths = [p.parent for p in paths]
    labels = _run_labels([p.resolve() for p in run_paths])
    data = [_by_epoch(read_metrics(d)) for d in run_dirs]
    many = len(run_dirs) > 1

    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    run_colors = {}
    if many:  # distinct colours per run, by index
        import matplotlib

        cmap = matplotlib.colormaps["tab10" if len(data) <= 10 else "tab20"]
        run_colors = {i: cmap(i % cmap.N) for i in range(len(data))}
    plotted = {"loss": set(), "acc": set()}
    for i, (rows, label) in enumerate(zip(data, labels, strict=True)):
        found = False
        for kind, ax in (("loss", ax_loss), ("acc", ax_acc)):
            for split in SPLITS:
                key = f"{split}_{kind}"
                pts = [(ep, _num(rec[key])) for ep, rec in rows if key in rec]
                if not pts:
                    continue
                found = True
                plotted[kind].add(split)
                xs, ys = [x for x, _ in pts], [y for _, y in pts]
                color = run_colors[i] if many else _SPLIT_COLOR[split]
                ax.plot(
                    xs,
                    ys,
                    ls=_SPLIT_STYLE[split],
                    color=color,
                    lw=1.5,
                    marker="o" if len(xs) <= 25 else None,
                    ms=3,
                    label=f"{label} {split}" if many else split,
                )
        if not found:
            keys = ", ".join(f"{s}_loss/{s}_acc" for s in SPLITS)
            raise DiffnasError(f"{paths[i]}: no loss or accuracy values ({keys})")

    for kind, ax, title in (("loss", ax_loss, "loss"), ("acc", ax_acc, "accuracy")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if not plotted[kind]:
            ax.text(0.5, 0.5, f"no {title} values", ha="center", va="center", transform=ax.transAxes, color="gray")
            continue
        if many:  # linestyle legend per axes; the run colours go in one figure legend
            ax.legend(
                handles=[
                    Line2D([], [], color="black", ls=_SPLIT_STYLE[s], label=s) for s in SPLITS if s in plotted[kind]
                ],
                fontsize=9,
            )
        else:
            ax.legend(fontsize=9)
    if many:
        fig.legend(
            handles=[Line2D([], [], color=run_colors[i], lw=2.5, label=lab) for i, lab in enumerate(labels)],
            loc="outside right upper",
            fontsize=9,
            frameon=False,
        )
    else:
        fig.suptitle(labels[0])
    return _save(fig, out)
