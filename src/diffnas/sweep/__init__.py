"""`diffnas sweep`: many trials (methods x seeds x grid values), each a fresh `diffnas run` process.

A trial is one point of the cross product; it runs as ``python -m diffnas run`` (or ``search``
with ``search_only``) into ``SWEEP_DIR/<trial-name>/``, in its own process, so a crash or a
memory blow-up stays in that trial. The local backend runs the processes on a pool of
threads on this machine; the Ray backend submits each trial as a Ray task
(``num_cpus``/``num_gpus`` per trial) so a cluster spreads them. Ray is optional
(``pip install 'diffnas[ray]'``). Ray 2.60's ``ray start`` turns on token authentication: a driver
given ``--address HOST:PORT`` needs ``RAY_AUTH_MODE=token`` (``--address auto`` on a node reads it).

Results: ``trials.jsonl`` (one JSON line per finished trial, the latest attempt of each),
``summary.csv`` (one row per trial) and a table grouped by method and grid point, with the
median and the range over seeds. Rerunning the same sweep skips the finished trials and
resumes a killed one from its last checkpoint (``--resume``); failed trials are tried again.

Modules: :mod:`.trials` (the trials and their records), :mod:`.backends` (local processes, Ray),
:mod:`.report` (``summary.csv`` and the table); :func:`run_sweep` here ties them together.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DiffnasError
from ..runtime.rundir import append_line
from .backends import RAY_HINT, run_local, run_ray
from .report import CSV_FIELDS, SUMMARY, format_table, write_records
from .trials import (
    LAUNCH,
    LOG,
    TRIALS,
    Trial,
    collect,
    done_file,
    expand_trials,
    failed_record,
    flatten_sets,
    load_records,
    parse_grid,
    parse_list,
    run_trial,
    split_values,
    trial_command,
)

SPEC = "sweep.json"

__all__ = [
    "CSV_FIELDS",
    "LAUNCH",
    "LOG",
    "RAY_HINT",
    "SPEC",
    "SUMMARY",
    "TRIALS",
    "SweepResult",
    "Trial",
    "collect",
    "expand_trials",
    "flatten_sets",
    "format_table",
    "load_records",
    "parse_grid",
    "parse_list",
    "run_local",
    "run_ray",
    "run_sweep",
    "run_trial",
    "split_values",
    "trial_command",
    "write_records",
]


@dataclass
class SweepResult:
    out: Path
    records: list  # this sweep's trials, in trial order
    launched: list  # names of the trials that ran (or resumed) in this call
    failed: list  # names of this sweep's failed trials


def run_sweep(
    out,
    methods=None,
    seeds=None,
    grid=None,
    *,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    search_only: bool = False,
    config=None,
    preset: str | None = None,
    overrides: dict | None = None,
    log=None,
) -> SweepResult:
    """Run every trial of methods x grid points x seeds that is not finished yet; see the module doc."""
    from ..catalog import resolve
    from ..config import deep_merge, parse_set

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown backend '{backend}'; choose local or ray")
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise DiffnasError(RAY_HINT) from None
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    overrides = dict(overrides or {})
    grid = parse_grid(grid) if isinstance(grid, (list, tuple)) else dict(grid or {})
    config = str(Path(config).resolve()) if config else None
    if not methods:
        methods = [resolve(overrides.get("method"), preset, config, overrides).method]
    overrides.pop("method", None)
    trials = expand_trials(list(methods), list(seeds or []), grid)

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    base_args = (["--preset", preset] if preset else []) + (["--config", config] if config else [])
    spec = {
        "out": str(out),
        "base_args": base_args,
        "sets": flatten_sets(overrides),
        "search_only": search_only,
        "cpus_per_trial": cpus_per_trial,
        "gpus_per_trial": gpus_per_trial,
        "cwd": os.getcwd(),
    }
    (out / SPEC).write_text(
        json.dumps({**spec, "methods": methods, "seeds": seeds, "grid": grid, "trials": [t.name for t in trials]})
        + "\n"
    )

    previous = load_records(out)
    todo, records, skipped, invalid = [], {}, [], []
    for t in trials:
        info = {"name": t.name, "method": t.method, "seed": t.seed, "sets": t.sets(), "overrides": t.overrides()}
        old = previous.get(t.name)
        done = done_file(out / t.name, search_only).is_file()
        if old and old.get("status") == "ok" and done:
            records[t.name] = old
            skipped.append(t.name)
            continue
        try:  # a config error fails the trial here, without a process
            resolve(t.method, preset, config, deep_merge(overrides, parse_set(t.sets())))
        except DiffnasError as e:
            invalid.append(failed_record(info, str(e)))
            continue
        todo.append(info)
    if skipped:
        log(f"sweep: {len(skipped)} of {len(trials)} trials already finished, skipped")

    path = out / TRIALS

    def on_done(rec: dict):
        records[rec["name"]] = rec
        append_line(path, json.dumps(rec))  # a record cut short by a kill stays a line of its own
        err = f": {rec['error']}" if rec.get("error") else ""
        log(f"sweep: [{len(records)}/{len(trials)}] {rec['name']} {rec['status']}{err}")

    for rec in invalid:
        on_done(rec)
    if todo:
        log(f"sweep: {len(todo)} trials on {backend} ({workers or 'all'} at a time) -> {out}")
        if backend == "local":
            run_local(spec, todo, workers or 1, on_done)
        else:
            run_ray(spec, todo, workers, address, on_done)

    ordered = [records[t.name] for t in trials if t.name in records]
    others = [r for n, r in load_records(out).items() if n not in records]
    write_records(out, ordered + others)
    return SweepResult(out, ordered, [t["name"] for t in todo], [r["name"] for r in ordered if r.get("status") != "ok"])
