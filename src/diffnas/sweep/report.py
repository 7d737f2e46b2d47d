"""What a sweep reports: ``summary.csv`` (one row per trial) and the table printed at the end.

``trials.jsonl`` is rewritten here too, in trial order, next to the CSV made from it. The table groups
the trials by method and grid point and shows the median and the range over seeds.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path

from .trials import TRIALS

SUMMARY = "summary.csv"


def _cell(genotype: dict | None, cell: str) -> str:
    if not genotype or cell not in genotype:  # (a space without DARTS cells, e.g. nb201: its "arch" string)
        return str((genotype or {}).get("arch", "")) if cell == "normal" else ""
    pairs = [f"{op}({i})" for op, i in genotype[cell]]
    return " | ".join(" + ".join(pairs[j : j + 2]) for j in range(0, len(pairs), 2))


CSV_FIELDS = [
    "name",
    "status",
    "method",
    "seed",
    "val_acc",
    "test_acc",
    "normal_skips",
    "params_m",
    "flops_m",
    "seconds",
    "peak_memory_mb",
    "resumed",
    "host",
    "error",
    "genotype_normal",
    "genotype_reduce",
    "run_dir",
]


def write_records(out, records: list[dict]) -> None:
    """``trials.jsonl`` (one line per trial) and ``summary.csv``, each replaced atomically."""
    out = Path(out)
    grid_keys = list(dict.fromkeys(k for r in records for k in r.get("overrides", {}) if k not in ("method", "seed")))
    tmp = out / f".{TRIALS}.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, out / TRIALS)
    metrics = _lookup_metrics(records)
    fields = CSV_FIELDS[:4] + grid_keys + CSV_FIELDS[4:6] + [f"lookup_{m}" for m in metrics] + CSV_FIELDS[6:]
    tmp = out / f".{SUMMARY}.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in records:
            row = {**r, **{k: r.get("overrides", {}).get(k) for k in grid_keys}}
            row.update({f"lookup_{m}": (r.get("lookup") or {}).get(m) for m in metrics})
            row["genotype_normal"] = _cell(r.get("genotype"), "normal")
            row["genotype_reduce"] = _cell(r.get("genotype"), "reduce")
            w.writerow(row)
    os.replace(tmp, out / SUMMARY)


def _lookup_metrics(records: list[dict]) -> list[str]:
    """The benchmark metrics any trial looked its architecture up in, in table order."""
    return list(dict.fromkeys(m for r in records for m in (r.get("lookup") or {})))


def _stat(values: list, fmt: str) -> str:
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return "-"
    med = format(statistics.median(values), fmt)
    if len(values) == 1:
        return med
    return f"{med} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def format_table(records: list[dict]) -> str:
    """One row per method and grid point: trials ok / all, then median (min-max) over seeds."""
    groups: dict = {}
    for r in records:
        grid = {k: v for k, v in r.get("overrides", {}).items() if k not in ("method", "seed")}
        key = (r.get("method") or "", " ".join(f"{k}={v}" for k, v in grid.items()))
        groups.setdefault(key, []).append(r)
    head = ["method", "grid point", "ok", "val acc", "test acc", "normal skips", "params M", "minutes"]
    metric = next(iter(_lookup_metrics(records)), None)  # the table's first metric
    if metric:
        head.insert(5, f"lookup {metric}")
    rows = []
    for (method, point), rs in groups.items():
        ok = [r for r in rs if r.get("status") == "ok"]
        rows.append(
            [
                method,
                point or "-",
                f"{len(ok)}/{len(rs)}",
                _stat([r.get("val_acc") for r in ok], ".4f"),
                _stat([r.get("test_acc") for r in ok], ".4f"),
                _stat([r.get("normal_skips") for r in ok], "g"),
                _stat([r.get("params_m") for r in ok], ".3f"),
                _stat([(r.get("seconds") or 0) / 60 for r in ok], ".1f"),
            ]
        )
        if metric:
            rows[-1].insert(5, _stat([(r.get("lookup") or {}).get(metric) for r in ok], ".2f"))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = [r for r in records if r.get("status") != "ok"]
    lines += [f"failed: {r['name']}: {r.get('error')}" for r in failed]
    return "\n".join(lines)


# -- the HTML page ---------------------------------------------------------------------------------
HTML = "report.html"
NOT_FIGURES = {"seed", "resumed", "error"}  # numbers in a record that are not results


def mean_std(values: list) -> dict | None:
    """mean, sample standard deviation (n - 1; 0 for one value), min and max of the numbers in ``values``."""
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values), "n": len(values)}


def group_stats(records: list[dict]) -> dict:
    """{(method, grid point): {figure: mean_std}} over the ok trials (the seeds) of each group."""
    out: dict = {}
    for key, rs in _groups(records).items():
        ok = [r for r in rs if r.get("status") == "ok"]
        figures = [k for k in dict.fromkeys(k for r in ok for k in r) if k not in NOT_FIGURES]
        stats = {k: mean_std([r.get(k) for r in ok]) for k in figures}
        out[key] = {k: v for k, v in stats.items() if v is not None}
    return out


def _groups(records: list[dict]) -> dict:
    groups: dict = {}
    for r in records:
        grid = {k: v for k, v in r.get("overrides", {}).items() if k not in ("method", "seed")}
        key = (r.get("method") or "", " ".join(f"{k}={v}" for k, v in grid.items()) or "-")
        groups.setdefault(key, []).append(r)
    return groups


def write_html(out, records: list[dict], path=None) -> Path:
    """``SWEEP_DIR/report.html``: per method and grid point, mean +- std and min-max over seeds of every figure,
    the found architectures side by side and the per-seed curves overlaid."""
    from ..report.html import architecture_svgs, figure_div, page, read_records, run_parts, table
    from ..spaces import load_architecture

    out = Path(out)
    stats = group_stats(records)
    sections = []
    figures = list(dict.fromkeys(k for s in stats.values() for k in s))
    rows = []
    for (method, point), s in stats.items():
        for k in figures:
            if k in s:
                v = s[k]
                rows.append(
                    [
                        method,
                        point,
                        k,
                        v["n"],
                        f"{v['mean']:.4g} \u00b1 {v['std']:.2g}",
                        f"{v['min']:.4g}\u2013{v['max']:.4g}",
                    ]
                )
    head = ["method", "grid point", "figure", "seeds", "mean \u00b1 std", "min\u2013max"]
    failed = [r for r in records if r.get("status") != "ok"]
    fails = "".join(f'<li class="warn">{r["name"]}: {r.get("error")}</li>' for r in failed)
    sections.append(("summary", "Results over seeds", table(head, rows) + (f"<ul>{fails}</ul>" if fails else "")))

    arch_parts, curve_parts = [], []
    for (method, point), rs in _groups(records).items():
        title = f"{method} {point if point != '-' else ''}".strip()
        pics = []
        curves = {}
        for r in rs:
            parts = run_parts(Path(r.get("run_dir") or out / r["name"]))
            search_dir = parts.get("search")
            arch = None
            for d in parts.values():
                try:
                    arch = load_architecture(d / "genotype.json")
                    break
                except Exception:  # a failed trial has none
                    continue
            label = f"seed {r.get('seed')}"
            pics.append(f"<div><h4>{label}</h4>{architecture_svgs(arch) if arch else '<p class=note>none</p>'}</div>")
            for kind, key in (("search", "val_acc"), ("train", "test_acc")):
                d = search_dir if kind == "search" else parts.get("train")
                recs = read_records(d / "metrics.jsonl") if d else []
                pts = [(x.get("epoch"), x[key]) for x in recs if isinstance(x.get(key), (int, float))]
                if pts:
                    curves.setdefault(f"{kind} {key}", []).append((label, pts))
        arch_parts.append(f"<h3>{title}</h3><div class='arch'>{''.join(pics)}</div>")
        for name, runs in curves.items():
            from plotly.graph_objects import Figure

            fig = Figure()
            for label, pts in runs:
                fig.add_scatter(
                    x=[p[0] for p in pts],
                    y=[p[1] for p in pts],
                    mode="lines+markers",
                    name=label,
                    hovertemplate=f"{label}<br>epoch %{{x}}<br>{name} %{{y:.4f}}<extra></extra>",
                )
            fig.update_layout(title=f"{title}: {name} per epoch, one line per seed", xaxis_title="epoch", height=340)
            curve_parts.append(figure_div(fig))
    sections.append(("architecture", "Found architectures", "".join(arch_parts)))
    sections.append(("curves", "Per-seed curves", "".join(curve_parts) or "<p class='note'>No curves.</p>"))
    path = Path(path) if path else out / HTML
    path.write_text(page(f"diffnas sweep report: {out.resolve().name}", sections), encoding="utf-8")
    return path
