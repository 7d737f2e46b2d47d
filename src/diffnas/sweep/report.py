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
    fields = CSV_FIELDS[:4] + grid_keys + CSV_FIELDS[4:]
    tmp = out / f".{SUMMARY}.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in records:
            row = {**r, **{k: r.get("overrides", {}).get(k) for k in grid_keys}}
            row["genotype_normal"] = _cell(r.get("genotype"), "normal")
            row["genotype_reduce"] = _cell(r.get("genotype"), "reduce")
            w.writerow(row)
    os.replace(tmp, out / SUMMARY)


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
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = [r for r in records if r.get("status") != "ok"]
    lines += [f"failed: {r['name']}: {r.get('error')}" for r in failed]
    return "\n".join(lines)
