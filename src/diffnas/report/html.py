"""The HTML report of a run: one self-contained page (plotly's JS inline, SVG drawings inline, no URL fetched).

A run directory is a search (``metrics.jsonl`` + ``summary.json``), a retraining (``result.json``)
or a ``diffnas run`` (``search/`` and ``train/`` inside); the page shows whatever of these it finds:
the summary, collapse warnings, the resolved config, the found architecture as the space draws it
(``Architecture.graphs``), the architecture-weight trajectories, the curves, the collapse monitors,
every other numeric per-epoch metric (e.g. a benchmark look-up), the method's events (its numeric
per-step records and per-epoch facts, and the architecture of every epoch) and the cost.
Sections have stable ids (``SECTIONS``) so a browser test can find them. The sweep report
(``diffnas.sweep.report``) is built from the same parts (``page``, ``figure_div``, ``architecture_svgs``).
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

from ..engine.monitors import EIGEN_RATIO, EIGEN_WINDOW, PARAM_FREE_FRACTION, collapse_warnings
from ..errors import DiffnasError
from ..runtime.rundir import read_jsonl
from ..spaces import Architecture, load_architecture
from ..spaces.darts.drawing import op_colors

REPORT = "report.html"
SECTIONS = (
    "summary",
    "warnings",
    "config",
    "architecture",
    "arch-weights",
    "curves",
    "monitors",
    "metrics",
    "events",
    "cost",
)
SEARCH_CURVES = ("train_loss", "val_loss", "arch_loss", "train_acc", "val_acc", "arch_acc")
TRAIN_CURVES = ("train_loss", "test_loss", "train_acc", "test_acc")
# per-epoch keys that have their own section (or are not numbers to plot)
KNOWN = {
    "epoch",
    "time",
    *SEARCH_CURVES,
    *TRAIN_CURVES,
    "genotype",
    "ops",
    "arch_weights",
    "alphas",
    "hessian_eigenvalue",
}
MONITOR_PREFIXES = ("param_free_", "alpha_entropy_")
STEP_KNOWN = {"epoch", "step", "loss", "acc", "arch_loss", "arch_acc"}
MAX_STEP_POINTS = 3000  # per-step series are thinned to this many points to keep the page light

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.85em;max-height:30em}
.warn{color:#a40000;font-weight:600}.ok{color:#2a6a2a}.arch{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.arch figure{margin:0;border:1px solid #eee;padding:.4em}.arch svg{max-width:560px;height:auto}
.note{color:#666;font-size:.9em}nav a{margin-right:.8em}
"""


def write_run_report(run_dir, out=None) -> Path:
    """Write the report of ``run_dir`` (search, train or run directory) to ``out`` (default ``RUN_DIR/report.html``)."""
    run_dir = Path(run_dir)
    parts = run_parts(run_dir)
    if not parts:
        raise DiffnasError(f"{run_dir}: not a run directory (no metrics.jsonl, summary.json or result.json)")
    out = Path(out) if out else run_dir / REPORT
    title = f"diffnas report: {run_dir.resolve().name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page(title, run_sections(parts)), encoding="utf-8")
    return out


def run_parts(run_dir: Path) -> dict:
    """{"search": dir, "train": dir} of what ``run_dir`` holds."""
    run_dir = Path(run_dir)
    parts = {}
    for kind in ("search", "train"):
        if (run_dir / kind).is_dir() and _is_kind(run_dir / kind, kind):
            parts[kind] = run_dir / kind
    if not parts:
        for kind in ("search", "train"):
            if _is_kind(run_dir, kind):
                parts[kind] = run_dir
    return parts


def _is_kind(path: Path, kind: str) -> bool:
    if kind == "search":
        return (path / "genotypes.jsonl").is_file() or (path / "summary.json").is_file()
    return (path / "result.json").is_file() or (
        (path / "metrics.jsonl").is_file() and not (path / "steps.jsonl").is_file()
    )


def read_records(path: Path) -> list[dict]:
    """A log's records by epoch (a resumed run's repeated epoch: the last wins); [] if absent."""
    if not path.is_file():
        return []
    by_epoch = {}
    for i, r in enumerate(read_jsonl(path)):
        by_epoch[r.get("epoch", i)] = r
    return [by_epoch[k] for k in sorted(by_epoch)]


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


def run_sections(parts: dict) -> list[tuple[str, str, str]]:
    """(id, title, HTML) per section of a run's page."""
    search_dir, train_dir = parts.get("search"), parts.get("train")
    metrics = read_records(search_dir / "metrics.jsonl") if search_dir else []
    train = read_records(train_dir / "metrics.jsonl") if train_dir else []
    summary = read_json(search_dir / "summary.json") if search_dir else {}
    result = read_json(train_dir / "result.json") if train_dir else {}
    arch = _architecture(search_dir, train_dir)
    edges = {t: len(ops) for t, ops in arch.cell_ops().items()} if arch else {}
    signs = warnings_by_epoch(metrics, edges)
    return [
        ("summary", "Summary", _summary(summary, result)),
        ("warnings", "Collapse warnings", _warnings(signs, metrics)),
        ("config", "Config and method", _config(search_dir or train_dir, summary)),
        ("architecture", "Found architecture", _arch_section(arch)),
        ("arch-weights", "Architecture weights", _arch_weights(metrics)),
        ("curves", "Losses and accuracies", _curves(metrics, train)),
        ("monitors", "Collapse monitors", _monitors(metrics, edges)),
        ("metrics", "Other per-epoch metrics", _other_metrics(metrics, train)),
        ("events", "Method events", _events(search_dir, metrics)),
        ("cost", "Cost", _cost(metrics, train, summary, result)),
    ]


def warnings_by_epoch(metrics: list[dict], edges: dict) -> list[tuple[int, str]]:
    """(epoch, line) each time a sign of collapse appears (as the search warned: not repeated while it lasts)."""
    out, active = [], set()
    for i in range(len(metrics)):
        signs = collapse_warnings(metrics[: i + 1], edges)
        out += [(metrics[i].get("epoch", i), line) for key, line in signs.items() if key not in active]
        active = set(signs)
    return out


# -- sections ---------------------------------------------------------------------------------
def _summary(summary: dict, result: dict) -> str:
    rows = []
    if summary:
        rows += [("search method", summary.get("method")), ("space", summary.get("space"))]
        rows += [("val acc (supernet)", _fmt(summary.get("val_acc")))]
        rows += [("search minutes", _fmt((summary.get("seconds") or 0) / 60))]
        rows += [("search peak memory MB", _fmt(summary.get("peak_memory_mb")))]
    if result:
        rows += [("test acc (retrained)", _fmt(result.get("test_acc"))), ("params M", _fmt(result.get("params_m")))]
        rows += [("FLOPs M", _fmt(result.get("flops_m"))), ("retrain minutes", _fmt((result.get("seconds") or 0) / 60))]
        rows += [("retrain peak memory MB", _fmt(result.get("peak_memory_mb")))]
    if not rows:
        return '<p class="note">No summary yet: the run has not finished.</p>'
    return table(["", "value"], rows)


def _warnings(signs: list, metrics: list) -> str:
    rules = (
        f'<p class="note">Thresholds: parameter-free ops (skip, pools) in at least {PARAM_FREE_FRACTION:g} of a '
        f"derived cell's edges; the Hessian's dominant eigenvalue growing so that its {EIGEN_WINDOW}-epoch mean "
        f"before over now is below {EIGEN_RATIO:g} (Zela et al., ICLR 2020). See diffnas/engine/monitors.py.</p>"
    )
    if not metrics:
        return '<p class="note">No search in this run.</p>'
    if not signs:
        return '<p class="ok">No sign of collapse.</p>' + rules
    items = "".join(f'<li class="warn">{html.escape(line)}</li>' for _, line in signs)
    return f"<ul>{items}</ul>{rules}"


def _config(path: Path | None, summary: dict) -> str:
    cfg = (path / "config.yaml").read_text() if path and (path / "config.yaml").is_file() else ""
    method = summary.get("method") or ""
    head = f"<p>method <b>{html.escape(str(method))}</b></p>" if method else ""
    return head + (f"<pre>{html.escape(cfg)}</pre>" if cfg else '<p class="note">no config.yaml</p>')


def _architecture(search_dir, train_dir) -> Architecture | None:
    for d in (search_dir, train_dir):
        if d and (d / "genotype.json").is_file():
            try:
                return load_architecture(d / "genotype.json")
            except DiffnasError:
                pass
    return None


def architecture_svgs(arch: Architecture) -> str:
    """The architecture's drawings as inline SVG figures (the space's ``graphs``); its text when it has none
    or Graphviz's ``dot`` is missing."""
    text = f"<pre>{html.escape(str(arch))}</pre>"
    try:
        graphs = arch.graphs()
        figures = [(title, _inline_svg(g.pipe(format="svg").decode())) for title, g in graphs.items()]
    except Exception as e:  # no dot executable, a space's drawing bug: the text still says what was found
        return (
            text
            + f'<p class="note">no drawing: {html.escape(str(e).splitlines()[0] if str(e) else type(e).__name__)}</p>'
        )
    pics = "".join(f"<figure><figcaption>{html.escape(t)}</figcaption>{svg}</figure>" for t, svg in figures)
    return f'<div class="arch">{pics}</div>{text}'


def _inline_svg(svg: str) -> str:
    """Graphviz's SVG document without its XML prolog and DOCTYPE, to sit inside HTML."""
    return svg[svg.index("<svg") :] if "<svg" in svg else svg


def _arch_section(arch) -> str:
    return architecture_svgs(arch) if arch else '<p class="note">No architecture file (genotype.json).</p>'


def _arch_weights(metrics: list[dict]) -> str:
    rows = [r for r in metrics if isinstance(r.get("arch_weights"), dict)]
    if not rows:
        return '<p class="note">No architecture weights logged.</p>'
    from plotly.subplots import make_subplots

    divs = []
    cells = list(dict.fromkeys(t for r in rows for t in r["arch_weights"]))
    for cell in cells:
        series = [(r["epoch"], r["arch_weights"][cell]) for r in rows if cell in r["arch_weights"]]
        edges, nops = len(series[-1][1]), len(series[-1][1][0]) if series[-1][1] else 0
        ops = (rows[-1].get("ops") or {}).get(cell) or [f"op {i}" for i in range(nops)]
        colors = op_colors(ops)
        cols = 4
        nrows = math.ceil(edges / cols)
        fig = make_subplots(
            rows=nrows, cols=cols, subplot_titles=[f"edge {e}" for e in range(edges)], shared_yaxes=True
        )
        for e in range(edges):
            for o, op in enumerate(ops):
                ys = [_num(w[e][o]) if e < len(w) and o < len(w[e]) else None for _, w in series]
                fig.add_scatter(
                    x=[ep for ep, _ in series],
                    y=ys,
                    mode="lines+markers",
                    name=op,
                    legendgroup=op,
                    showlegend=e == 0,
                    line={"color": colors[op]},
                    marker={"size": 4},
                    hovertemplate=f"edge {e}<br>op {op}<br>epoch %{{x}}<br>weight %{{y:.4f}}<extra></extra>",
                    row=e // cols + 1,
                    col=e % cols + 1,
                )
        fig.update_layout(title=f"{cell} cell: op weights per edge", height=200 * nrows + 120, margin={"t": 80})
        fig.update_annotations(font_size=11)
        divs.append(figure_div(fig))
    return "".join(divs)


def _curves(metrics: list[dict], train: list[dict]) -> str:
    divs = []
    for name, records, keys in (("search", metrics, SEARCH_CURVES), ("retraining", train, TRAIN_CURVES)):
        if records:
            divs.append(_epoch_figure(f"{name}: loss and accuracy per epoch", records, keys, two_axes=True))
    return "".join(divs) or '<p class="note">No per-epoch metrics yet.</p>'


def _monitors(metrics: list[dict], edges: dict) -> str:
    keys = [k for k in _numeric_keys(metrics) if k.startswith(MONITOR_PREFIXES)]
    divs = []
    if keys:
        fig = _epoch_fig(metrics, keys)
        for cell, n in edges.items():
            if f"param_free_{cell}" in keys:
                fig.add_hline(
                    y=PARAM_FREE_FRACTION * n,
                    line_dash="dot",
                    line_color="#a40000",
                    annotation_text=f"collapse threshold ({cell})",
                )
        fig.update_layout(
            title="parameter-free ops in the derived cells, and the architecture weights' entropy (1 = uniform)"
        )
        divs.append(figure_div(fig))
    if any(isinstance(r.get("hessian_eigenvalue"), (int, float)) for r in metrics):
        divs.append(
            _epoch_figure(
                "dominant eigenvalue of the val loss's Hessian w.r.t. the architecture", metrics, ["hessian_eigenvalue"]
            )
        )
    else:
        divs.append('<p class="note">No Hessian eigenvalue logged (search.hessian_every: every K epochs, 0 = off).</p>')
    return "".join(divs)


def _other_metrics(metrics: list[dict], train: list[dict]) -> str:
    """Every numeric per-epoch key without a section of its own (learning rate, zeta, a benchmark look-up ...)."""
    divs = []
    for name, records in (("search", metrics), ("retraining", train)):
        keys = [k for k in _numeric_keys(records) if k not in KNOWN and not k.startswith(MONITOR_PREFIXES)]
        for k in keys:
            divs.append(_epoch_figure(f"{name}: {k}", records, [k], height=260))
    return "".join(divs) or '<p class="note">No other per-epoch metrics.</p>'


def _events(search_dir, metrics: list[dict]) -> str:
    if not search_dir:
        return '<p class="note">No search in this run.</p>'
    parts = []
    steps = read_jsonl(search_dir / "steps.jsonl") if (search_dir / "steps.jsonl").is_file() else []
    facts = {k for r in metrics for k in r}
    keys = [k for k in _numeric_keys(steps) if k not in STEP_KNOWN and k not in facts]
    if keys:
        from plotly.subplots import make_subplots

        stride = max(1, math.ceil(len(steps) / MAX_STEP_POINTS))
        thin = steps[::stride]
        per_epoch = max((r.get("step", 0) for r in steps), default=0) + 1
        x = [r.get("epoch", 0) + r.get("step", 0) / per_epoch for r in thin]
        fig = make_subplots(rows=len(keys), cols=1, shared_xaxes=True, subplot_titles=keys, vertical_spacing=0.06)
        for i, k in enumerate(keys):
            fig.add_scatter(
                x=x,
                y=[_num(r.get(k)) for r in thin],
                mode="lines",
                name=k,
                row=i + 1,
                col=1,
                hovertemplate=f"{k}<br>epoch %{{x:.2f}}<br>%{{y:.4g}}<extra></extra>",
            )
        fig.update_layout(
            title="per-step records (x: epoch + step fraction)", height=170 * len(keys) + 120, showlegend=False
        )
        parts.append(figure_div(fig))
    extra = [k for k in dict.fromkeys(k for r in metrics for k in r) if k not in KNOWN and not _is_number(metrics, k)]
    if extra:
        rows = [[r.get("epoch")] + [_short(r.get(k)) for k in extra] for r in metrics]
        parts.append("<h3>per-epoch facts the method records</h3>" + table(["epoch", *extra], rows))
    genos = [(r.get("epoch"), r.get("genotype")) for r in metrics if isinstance(r.get("genotype"), str)]
    if genos:
        rows, prev = [], None
        for ep, g in genos:
            rows.append((ep, "changed" if prev is not None and g != prev else "", f"<pre>{html.escape(g)}</pre>"))
            prev = g
        head = "<h3>the discrete architecture of every epoch</h3>"
        parts.append(head + table(["epoch", "", "architecture"], rows, escape=False))
    return "".join(parts) or '<p class="note">The method recorded no events.</p>'


def _cost(metrics, train, summary, result) -> str:
    from plotly.graph_objects import Bar, Figure

    fig = Figure()
    for name, records in (("search", metrics), ("retraining", train)):
        if records:
            fig.add_trace(
                Bar(
                    x=[r.get("epoch") for r in records],
                    y=[_num(r.get("time")) for r in records],
                    name=name,
                    hovertemplate=f"{name}<br>epoch %{{x}}<br>%{{y:.2f}} s<extra></extra>",
                )
            )
    peaks = [(n, d.get("peak_memory_mb")) for n, d in (("search", summary), ("retraining", result)) if d]
    rows = [(n, _fmt(p)) for n, p in peaks]
    text = table(["peak memory", "MB"], rows) if rows else ""
    if not fig.data:
        return text or '<p class="note">No cost figures yet.</p>'
    fig.update_layout(title="seconds per epoch", xaxis_title="epoch", yaxis_title="seconds", height=320)
    return figure_div(fig) + text


# -- parts the sweep report shares -------------------------------------------------------------
def figure_div(fig) -> str:
    """A plotly figure as a div; the page carries plotly's JS once (``page``)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def page(title: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole self-contained HTML page: plotly's JS inline, one <section id=...> per section."""
    from plotly.offline import get_plotlyjs

    nav = "".join(f'<a href="#{sid}">{html.escape(t)}</a>' for sid, t, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{html.escape(t)}</h2>{content}</section>' for sid, t, content in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head>"
        f"<body><h1>{html.escape(title)}</h1><nav>{nav}</nav>{body}</body></html>"
    )


def table(head: list, rows: list, escape: bool = True) -> str:
    esc = (lambda v: html.escape(str(v))) if escape else str
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


def _epoch_fig(records: list[dict], keys, two_axes: bool = False, height: int = 360):
    from plotly.graph_objects import Figure

    fig = Figure()
    for k in keys:
        pts = [(r.get("epoch"), _num(r[k])) for r in records if k in r]
        if not pts:
            continue
        right = two_axes and "acc" in k
        fig.add_scatter(
            x=[p[0] for p in pts],
            y=[p[1] for p in pts],
            mode="lines+markers",
            name=k,
            yaxis="y2" if right else "y",
            line={"dash": "dot" if right else "solid"},
            hovertemplate=f"{k}<br>epoch %{{x}}<br>%{{y:.4g}}<extra></extra>",
        )
    layout = {"height": height, "xaxis_title": "epoch", "hovermode": "closest"}
    if two_axes:
        layout.update(yaxis_title="loss", yaxis2={"title": "accuracy", "overlaying": "y", "side": "right"})
    fig.update_layout(**layout)
    return fig


def _epoch_figure(title: str, records, keys, two_axes: bool = False, height: int = 360) -> str:
    fig = _epoch_fig(records, keys, two_axes, height)
    fig.update_layout(title=title)
    return figure_div(fig)


def _numeric_keys(records: list[dict]) -> list[str]:
    return [k for k in dict.fromkeys(k for r in records for k in r) if _is_number(records, k)]


def _is_number(records: list[dict], key: str) -> bool:
    """Every value of ``key`` is a number or a bool (bools plot as 0/1)."""
    values = [r[key] for r in records if key in r and r[key] is not None]
    return bool(values) and all(isinstance(v, (int, float)) for v in values)


def _num(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "-" if v is None else str(v)
    return f"{v:.4g}"


def _short(v, limit: int = 160) -> str:
    text = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    text = re.sub(r"(\d\.\d{4})\d+", r"\1", text)  # long floats: 4 decimals
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
