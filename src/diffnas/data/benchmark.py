"""Benchmark tables: the trained accuracy of every architecture of a space, looked up by its string form.

A table is a CSV file with a header row: one column of architecture strings
(``benchmark.arch_column``, default ``arch``), each ``str(architecture)`` of the space (for
NAS-Bench-201 ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``), and metric columns of numbers
(``benchmark.metrics``, default every other column, in file order; the first is the one
summaries and sweep tables show). The whole file is checked when it is loaded, before a run
starts, so a broken table or a wrong column name never stops a long search midway.

``convert`` writes such a table from the official NATS-Bench / NAS-Bench-201 files through
their API packages (``nats_bench``, ``nas_201_api``: the optional extra ``diffnas[nb201]``).
"""

from __future__ import annotations

import csv
import importlib
import math
import os
from pathlib import Path

from ..errors import DataError

PREFIX = "lookup_"  # a looked-up metric's key in logs and summaries: lookup_<column>


class BenchmarkTable:
    """Architecture string -> {metric: value}, read and checked from one CSV file."""

    def __init__(self, path, rows: dict, metrics: list[str]):
        self.path, self.rows, self.metrics = Path(path), rows, metrics

    @classmethod
    def from_config(cls, cfg) -> BenchmarkTable | None:
        """The table ``cfg.benchmark`` names, or None without one."""
        b = cfg.get("benchmark") or {}
        return cls.load(b["file"], b.get("arch_column", "arch"), b.get("metrics")) if b.get("file") else None

    @classmethod
    def load(cls, path, arch_column: str = "arch", metrics=None) -> BenchmarkTable:
        """Read and check the whole table; a problem is one line naming the file (``DataError``)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such benchmark table")
        if isinstance(metrics, str):
            metrics = [m.strip() for m in metrics.split(",") if m.strip()]
        if metrics is not None and (not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics)):
            raise DataError(f"benchmark.metrics must be a list of column names, got {metrics!r}")
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if not header:
                    raise DataError(f"{path}: empty; a benchmark table starts with a header row ({arch_column},...)")
                header = [h.strip() for h in header]
                columns = cls._columns(path, header, arch_column, metrics)
                rows, lines = {}, {}
                for row in reader:
                    if not row:
                        continue
                    where = f"{path} line {reader.line_num}"
                    if len(row) != len(header):
                        raise DataError(f"{where}: {len(row)} fields, the header has {len(header)}")
                    arch = row[columns[arch_column]]
                    if arch in rows:
                        raise DataError(f"{where}: architecture {arch!r} appears twice (first on line {lines[arch]})")
                    rows[arch] = {m: _number(row[columns[m]], m, where) for m in columns if m != arch_column}
                    lines[arch] = reader.line_num
        except (csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not a CSV table ({e})") from None
        if not rows:
            raise DataError(f"{path}: no architectures below the header")
        return cls(path, rows, [m for m in columns if m != arch_column])

    @staticmethod
    def _columns(path, header: list[str], arch_column: str, metrics) -> dict:
        """{column name: index} of the architecture column and the metric columns, in that order."""
        index = {h: i for i, h in enumerate(header)}
        if arch_column not in index:
            raise DataError(
                f"{path}: no architecture column '{arch_column}' (benchmark.arch_column); "
                f"the header has {', '.join(header)}"
            )
        if metrics is None:
            metrics = [h for h in header if h != arch_column]
        missing = [m for m in metrics if m not in index or m == arch_column]
        if missing or not metrics:
            raise DataError(
                f"{path}: no metric column {', '.join(repr(m) for m in missing) or 'at all'} (benchmark.metrics); "
                f"the header has {', '.join(header)}"
            )
        return {arch_column: index[arch_column], **{m: index[m] for m in metrics}}

    @property
    def primary(self) -> str:
        """The metric summaries and sweep tables show: the first one."""
        return self.metrics[0]

    def get(self, architecture) -> dict | None:
        """{metric: value} of ``architecture`` (or its string), None if the table lacks it."""
        return self.rows.get(str(architecture))

    def lookup(self, architecture) -> dict:
        """{metric: value} of ``architecture``; a missing one is a one-line error naming the file."""
        found = self.get(architecture)
        if found is None:
            raise DataError(
                f"{self.path}: architecture {str(architecture)!r} is not in the table "
                f"({len(self.rows)} architectures; is it a table of this space?)"
            )
        return found

    def record(self, architecture) -> dict:
        """``{lookup_<metric>: value}`` for logs and summaries; values None when the table lacks it."""
        found = self.get(architecture) or {}
        return {PREFIX + m: found.get(m) for m in self.metrics}

    def summary(self, architecture) -> dict:
        """What a summary.json or result.json says: the table, and the metrics (None when it lacks them)."""
        found = self.get(architecture) or {}
        return {"benchmark": str(self.path), "lookup": {m: found.get(m) for m in self.metrics}}


def _number(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: column '{column}' holds {text!r}, not a number") from None
    if math.isnan(value):
        raise DataError(f"{where}: column '{column}' holds NaN")
    return value


# -- the converter ---------------------------------------------------------------------------
# (column, the API's data set name, the API's key): NAS-Bench-201's own reporting (its Table 5):
# CIFAR-10 valid on the train/valid split ("cifar10-valid"), test after training on train+valid
# ("cifar10"); CIFAR-100 and ImageNet16-120 valid and test of the same training.
NB201_COLUMNS = (
    ("cifar10_test", "cifar10", "test-accuracy"),
    ("cifar10_valid", "cifar10-valid", "valid-accuracy"),
    ("cifar100_test", "cifar100", "test-accuracy"),
    ("cifar100_valid", "cifar100", "valid-accuracy"),
    ("imagenet16_test", "ImageNet16-120", "test-accuracy"),
    ("imagenet16_valid", "ImageNet16-120", "valid-accuracy"),
)

APIS = {"nats": "nats_bench", "nb201": "nas_201_api"}


def open_api(source, api: str = "nats"):
    """The official benchmark API object over ``source`` (NATS-Bench's topology files or NAS-Bench-201's .pth)."""
    if api not in APIS:
        raise DataError(f"unknown benchmark API '{api}'; choose from {', '.join(APIS)}")
    try:
        module = importlib.import_module(APIS[api])
    except ImportError:
        raise DataError(
            f"converting needs the package {APIS[api]}: pip install 'diffnas[nb201]' (or pip install {APIS[api]})"
        ) from None
    if not Path(source).exists():
        raise DataError(f"{source}: no such benchmark file or folder")
    try:
        if api == "nats":
            return module.create(str(source), "tss", fast_mode=True, verbose=False)
        return module.NASBench201API(str(source), verbose=False)
    except Exception as e:  # the packages raise anything on a wrong file
        raise DataError(f"{source}: {APIS[api]} cannot read it ({type(e).__name__}: {e})") from None


def convert(source, out, api: str = "nats", hp: str = "200", log=None) -> int:
    """Write the benchmark table of every architecture in ``source`` to ``out`` (CSV, accuracies in percent as
    the APIs give them, averaged over the benchmark's seeds); returns the number of rows."""
    bench = open_api(source, api)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    n = len(bench)
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", *(c for c, _, _ in NB201_COLUMNS)])
        for i in range(n):
            infos: dict = {}
            row = [bench.arch(i)]
            for _, dataset, key in NB201_COLUMNS:
                if dataset not in infos:
                    infos[dataset] = bench.get_more_info(i, dataset, hp=hp, is_random=False)
                row.append(infos[dataset][key])
            w.writerow(row)
            if log and (i + 1) % 1000 == 0:
                log(f"{i + 1}/{n} architectures")
    os.replace(tmp, out)
    return n
