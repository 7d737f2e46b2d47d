"""The trials of a sweep: which ones there are, how one runs, and the records they leave.

A trial is one point of methods x grid values x seeds, with a name that is also its folder under the
sweep directory. :func:`run_trial` runs (or resumes) one in a fresh ``diffnas`` process, taking and
returning plain data so that any backend can run it; its record is one line of ``trials.jsonl``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import ConfigError

TRIALS = "trials.jsonl"
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
def done_file(trial_dir: Path, search_only: bool) -> Path:
    """The file a trial has once it finished."""
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


def _error_line(log: Path, returncode: int) -> str:
    """The failure of a trial process: the signal that killed it, else its last ``diffnas: error:`` line."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
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
        "normal_skips": sum(op == "skip_connect" for op, _ in genotype["normal"])
        if genotype and "normal" in genotype
        else None,
        "val_acc": val_acc if val_acc is not None else s.get("val_acc"),
        "test_acc": t.get("test_acc"),
        "params_m": t.get("params_m"),
        "flops_m": t.get("flops_m"),
        "peak_memory_mb": max(peaks) if peaks else None,
        # the found architecture in the benchmark table ({metric: value}), when the trial had one
        "lookup": s.get("lookup") or t.get("lookup"),
    }


def run_trial(spec: dict, trial: dict, env_extra: dict | None = None) -> dict:
    """Run (or resume) one trial in a fresh ``diffnas`` process; return its record.

    Takes and returns plain data so that it can run as a Ray task on another machine.
    """
    trial_dir = Path(spec["out"]) / trial["name"]
    trial_dir.mkdir(parents=True, exist_ok=True)
    src = str(Path(__file__).resolve().parents[2])  # the folder holding this diffnas package
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
    done = done_file(trial_dir, spec["search_only"])
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
            record.update(status="failed", error=_error_line(log, proc.returncode), returncode=proc.returncode)
        elif not done.is_file():
            record.update(status="failed", error=f"diffnas {args[0]} exited 0 but wrote no {done.name}")
    record.update(collect(trial_dir, spec["search_only"]))
    record["seconds"] = round(time.time() - t0, 3)
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return record


# -- records --------------------------------------------------------------------------------
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


def failed_record(trial: dict, error: str) -> dict:
    """The record of a trial that failed outside its process (a bad config, a broken runner)."""
    keys = ("name", "method", "seed", "overrides")
    return {**{k: trial[k] for k in keys}, "status": "failed", "error": error}
