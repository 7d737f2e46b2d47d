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
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import itertools
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError, DiffnasError

TRIALS = "trials.jsonl"
SUMMARY = "summary.csv"
SPEC = "sweep.json"
LOG = "trial.log"
# a trial process: dies with the thread that started it (Linux), so a killed sweep leaves no trial running
LAUNCH = """import ctypes, os, runpy, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(os.environ.get("DIFFNAS_SWEEP_PID", os.getppid())):
        sys.exit(1)
sys.argv = ["diffnas", *sys.argv[1:]]
runpy.run_module("diffnas", run_name="__main__", alter_sys=True)
"""
RAY_HINT = "--backend ray needs Ray, which is not installed: pip install 'diffnas[ray]'"


# -- trials ---------------------------------------------------------------------------------
@dataclass
class Trial:
    """One point of the sweep: a method, a seed (None: the config's) and raw grid values."""

    method: str | None
    seed: int | None = None
    grid: dict = field(default_factory=dict)  # config key -> value as typed on the command line

    @property
    def name(self) -> str:
        parts = [self.method] if self.method else []
        parts += [f"{k}={v}" for k, v in self.grid.items()]
        if self.seed is not None:
            parts.append(f"s{self.seed}")
        return "__".join(_safe(p) for p in parts) or "trial"

    def sets(self) -> list[str]:
        """The trial's own ``--set`` items (method, seed, grid values)."""
        out = [f"method={self.method}"] if self.method else []
        if self.seed is not None:
            out.append(f"seed={self.seed}")
        return out + [f"{k}={v}" for k, v in self.grid.items()]

    def overrides(self) -> dict:
        """Flat ``{key: value}`` of what this trial sets, values read as YAML (numbers as numbers)."""
        out: dict = {"method": self.method, "seed": self.seed}
        out.update({k: _scalar(v) for k, v in self.grid.items()})
        return out


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", str(text))


def _scalar(raw: str):
    value = yaml.safe_load(raw)
    if isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
        try:
            return float(value)
        except ValueError:
            pass
    return value


def split_values(text: str) -> list[str]:
    """``"a,[1,2],b"`` -> ``["a", "[1,2]", "b"]``: commas inside brackets or braces do not split."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [v for v in out if v]


def parse_list(text: str | None, kind=str) -> list:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (duplicates dropped); None or empty -> []."""
    if not text:
        return []
    try:
        return list(dict.fromkeys(kind(v) for v in split_values(text)))
    except ValueError:
        raise ConfigError(f"expected a comma-separated list of {kind.__name__}, got '{text}'") from None


def parse_grid(items) -> dict:
    """``["search.a_lr=3e-4,6e-4", "reg.size=0,0.01"]`` -> ``{key: [raw values]}`` in the given order."""
    grid: dict = {}
    for item in items or []:
        key, has_eq, values = item.partition("=")
        key = key.strip()
        if not has_eq or not key or not split_values(values):
            raise ConfigError(f"--grid expects KEY=V1,V2,..., got '{item}'")
        if key in grid:
            raise ConfigError(f"--grid key '{key}' given twice")
        if key in ("method", "seed"):
            raise ConfigError(f"use --{'method' if key == 'method' else 'seeds'} instead of --grid {key}=...")
        grid[key] = list(dict.fromkeys(split_values(values)))
    return grid


def expand_trials(methods=None, seeds=None, grid=None) -> list[Trial]:
    """The cross product methods x grid points x seeds, seeds innermost; names must be unique."""
    grid = grid or {}
    keys = list(grid)
    trials = [
        Trial(m, s, dict(zip(keys, point)))
        for m in (methods or [None])
        for point in itertools.product(*(grid[k] for k in keys))
        for s in (seeds or [None])
    ]
    names = [t.name for t in trials]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"two trials would share the name {dupes[0]}; make the grid values distinct")
    return trials


def flatten_sets(overrides: dict, prefix: str = "") -> list[str]:
    """A nested overrides dict as ``--set key.sub=VALUE`` items (values as JSON, which YAML reads back)."""
    out = []
    for k, v in overrides.items():
        if isinstance(v, dict) and v:
            out += flatten_sets(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}={json.dumps(v)}")
    return out


# -- one trial ------------------------------------------------------------------------------
def _done_file(trial_dir: Path, search_only: bool) -> Path:
    return trial_dir / "search" / "summary.json" if search_only else trial_dir / "train" / "result.json"


def trial_command(spec: dict, trial_dir: Path) -> tuple[list[str], bool]:
    """The ``diffnas`` arguments that finish this trial from where it stands, and whether that resumes."""
    search_dir, train_dir = trial_dir / "search", trial_dir / "train"
    fresh = [*spec["base_args"], *(a for s in spec["sets"] for a in ("--set", s))]
    if spec["search_only"]:
        if (search_dir / "config.yaml").is_file():
            return ["search", "--resume", str(search_dir)], True
        return ["search", "--out", str(search_dir), *fresh], False
    if (search_dir / "summary.json").is_file():  # the search finished
        if (train_dir / "config.yaml").is_file():
            return ["train", "--resume", str(train_dir)], True
        return ["train", "--genotype", str(search_dir), "--out", str(train_dir), *fresh], True
    if (search_dir / "config.yaml").is_file():
        return ["run", "--resume", str(trial_dir)], True
    return ["run", "--out", str(trial_dir), *fresh], False


def _error_line(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("diffnas: error: "):
            return ln[len("diffnas: error: ") :]
    return lines[-1] if lines else "no output"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _last_metric(path: Path, key: str):
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            value = json.loads(line).get(key)
        except ValueError:
            continue
        if value is not None:
            return value
    return None


def collect(trial_dir, search_only: bool = False) -> dict:
    """The results a finished trial left in its run directories."""
    trial_dir = Path(trial_dir)
    s = _read_json(trial_dir / "search" / "summary.json")
    t = {} if search_only else _read_json(trial_dir / "train" / "result.json")
    genotype = s.get("genotype") or t.get("genotype")
    # a resumed search that had nothing left to do reports no val acc in summary.json; metrics.jsonl has it
    val_acc = _last_metric(trial_dir / "search" / "metrics.jsonl", "val_acc")
    peaks = [x["peak_memory_mb"] for x in (s, t) if isinstance(x.get("peak_memory_mb"), (int, float))]
    return {
        "genotype": genotype,
        "normal_skips": sum(op == "skip_connect" for op, _ in genotype["normal"]) if genotype else None,
        "val_acc": val_acc if val_acc is not None else s.get("val_acc"),
        "test_acc": t.get("test_acc"),
        "params_m": t.get("params_m"),
        "flops_m": t.get("flops_m"),
        "peak_memory_mb": max(peaks) if peaks else None,
    }


def run_trial(spec: dict, trial: dict, env_extra: dict | None = None) -> dict:
    """Run (or resume) one trial in a fresh ``diffnas`` process; return its record.

    Takes and returns plain data so that it can run as a Ray task on another machine.
    """
    trial_dir = Path(spec["out"]) / trial["name"]
    trial_dir.mkdir(parents=True, exist_ok=True)
    src = str(Path(__file__).resolve().parents[1])
    threads = str(max(1, int(spec["cpus_per_trial"])))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **(env_extra or {})}
    env["DIFFNAS_SWEEP_PID"] = str(os.getpid())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    cwd = spec.get("cwd") if spec.get("cwd") and Path(spec["cwd"]).is_dir() else None
    spec = {**spec, "sets": [*spec["sets"], *trial["sets"]]}
    record = {
        "name": trial["name"],
        "status": "ok",
        "error": None,
        "method": trial["method"],
        "seed": trial["seed"],
        "overrides": trial["overrides"],
        "run_dir": str(trial_dir),
        "host": socket.gethostname(),
        "resumed": False,
    }
    t0 = time.time()
    done = _done_file(trial_dir, spec["search_only"])
    log = trial_dir / LOG
    if not done.is_file():
        args, record["resumed"] = trial_command(spec, trial_dir)
        with open(log, "a") as f:
            f.write(f"$ diffnas {' '.join(args)}\n")
            f.flush()
            proc = subprocess.run(
                [sys.executable, "-c", LAUNCH, *args, "--no-progress"],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
            )
        if proc.returncode != 0:
            record.update(status="failed", error=_error_line(log), returncode=proc.returncode)
        elif not done.is_file():
            record.update(status="failed", error=f"diffnas {args[0]} exited 0 but wrote no {done.name}")
    record.update(collect(trial_dir, spec["search_only"]))
    record["seconds"] = round(time.time() - t0, 3)
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return record


# -- backends -------------------------------------------------------------------------------
def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch or no CUDA: no GPUs
        return []


def _slot_env(slot: int, gpus_per_trial: float, gpus: list[str]) -> dict:
    if gpus_per_trial <= 0 or not gpus:
        return {}
    if gpus_per_trial < 1:  # trials share a GPU
        ids = [gpus[int(slot * gpus_per_trial) % len(gpus)]]
    else:
        g = int(gpus_per_trial)
        ids = [gpus[(slot * g + j) % len(gpus)] for j in range(g)]
    return {"CUDA_VISIBLE_DEVICES": ",".join(ids)}


def run_local(spec: dict, trials: list[dict], workers: int, on_done) -> None:
    """A pool of ``workers`` threads, each running one trial process at a time."""
    import queue

    slots: queue.Queue = queue.Queue()
    for i in range(workers):
        slots.put(i)
    gpus = _gpu_ids() if spec["gpus_per_trial"] > 0 else []

    def job(trial):
        slot = slots.get()
        try:
            return run_trial(spec, trial, _slot_env(slot, spec["gpus_per_trial"], gpus))
        finally:
            slots.put(slot)

    pool = cf.ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(job, t): t for t in trials}
        for fut in cf.as_completed(futures):
            on_done(_result_or_error(fut.result, futures[fut]))
    finally:  # on Ctrl-C: start no more trials (the running ones got the SIGINT too)
        pool.shutdown(wait=True, cancel_futures=True)


def run_ray(spec: dict, trials: list[dict], workers: int | None, address: str | None, on_done) -> None:
    """One Ray task per trial (``num_cpus``, ``num_gpus``); at most ``workers`` in flight when given."""
    try:
        import ray
    except ImportError:
        raise DiffnasError(RAY_HINT) from None
    started = not ray.is_initialized()
    if started:
        kwargs = {"address": address} if address else {}
        try:
            ray.init(**kwargs, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except Exception as e:  # noqa: BLE001 - no cluster at that address, a wrong token, ...
            lines = str(e).strip().splitlines()
            raise DiffnasError(f"Ray: {lines[-1] if lines else type(e).__name__}") from None
    try:
        task = ray.remote(num_cpus=spec["cpus_per_trial"], num_gpus=spec["gpus_per_trial"], max_retries=0)(run_trial)
        waiting = list(trials)
        running: dict = {}
        while waiting or running:
            while waiting and (not workers or len(running) < workers):
                t = waiting.pop(0)
                running[task.remote(spec, t)] = t
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                t = running.pop(ref)
                on_done(_result_or_error(lambda ref=ref: ray.get(ref), t))
    except BaseException:
        for ref in running:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()


def _failed(trial: dict, error: str) -> dict:
    keys = ("name", "method", "seed", "overrides")
    return {**{k: trial[k] for k in keys}, "status": "failed", "error": error}


def _result_or_error(get, trial: dict) -> dict:
    try:
        return get()
    except Exception as e:  # noqa: BLE001 - the trial's runner itself broke (a lost Ray node, ...)
        msg = str(e).strip().splitlines()
        return _failed(trial, f"{type(e).__name__}: {msg[-1] if msg else ''}")


# -- the sweep ------------------------------------------------------------------------------
@dataclass
class SweepResult:
    out: Path
    records: list  # this sweep's trials, in trial order
    launched: list  # names of the trials that ran (or resumed) in this call
    failed: list  # names of this sweep's failed trials


def _deep_update(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_records(out) -> dict:
    """The latest record of each trial in ``trials.jsonl``, by name."""
    path = Path(out) / TRIALS
    records: dict = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:  # a line cut short by a kill
                continue
            if isinstance(rec, dict) and rec.get("name"):
                records[rec["name"]] = rec
    return records


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
    from .config import parse_set, resolve

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
        done = _done_file(out / t.name, search_only).is_file()
        if old and old.get("status") == "ok" and done:
            records[t.name] = old
            skipped.append(t.name)
            continue
        try:  # a config error fails the trial here, without a process
            resolve(t.method, preset, config, _deep_update(overrides, parse_set(t.sets())))
        except DiffnasError as e:
            invalid.append(_failed(info, str(e)))
            continue
        todo.append(info)
    if skipped:
        log(f"sweep: {len(skipped)} of {len(trials)} trials already finished, skipped")

    path = out / TRIALS

    def on_done(rec: dict):
        records[rec["name"]] = rec
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
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


# -- reports --------------------------------------------------------------------------------
def _cell(genotype: dict | None, cell: str) -> str:
    if not genotype:
        return ""
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
