"""The Python API: what the CLI calls, usable from a notebook or a script.

import diffnas
s = diffnas.search(method="darts", preset="quick", out="runs/a")  # minutes on a CPU
t = diffnas.train(s.genotype, preset="quick", out="runs/a-train")  # no preset: the paper's scale (a GPU's day)
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .catalog import method_table, reload, resolve, space_table
from .config import Config, load_yaml, merge
from .data.benchmark import BenchmarkTable, convert
from .engine.search import SearchResult
from .engine.search import search as _search
from .engine.train import TrainResult
from .engine.train import train as _train
from .errors import ConfigError, DiffnasError
from .runtime import distributed
from .runtime.rundir import RunDir
from .spaces import Architecture, architecture_path, load_architecture


def list_methods() -> list[dict]:
    """Every method: its help, default relaxation and space, and the relaxations and spaces it works with."""
    return method_table()


def list_spaces() -> list[dict]:
    """Every space: its help, task and metric, data sets, and the methods, relaxations and regularizers it takes."""
    return space_table()


def _config(resume, config=None, preset=None, overrides=None, kind: str = "search") -> Config:
    """A new run's config, or a resumed ``kind`` run's own config with the changes a resume may make
    (``catalog.reload``); checked before anything is written, the device too."""
    overrides = dict(overrides or {})
    if resume:
        cfg = _resumed_config(Path(resume), kind, config, preset, overrides)
    else:
        cfg = resolve(overrides.pop("method", None), preset, config, overrides)
    distributed.parse_device(cfg.device)
    return cfg


def _resumed_config(path: Path, kind: str, config, preset, overrides: dict) -> Config:
    """The run's own config.yaml: a resume continues one run, it does not start another in its directory."""
    if config or preset:
        raise ConfigError("--resume continues a run with its own config.yaml; --config and --preset cannot go with it")
    found = _run_kind(path)
    if found not in (None, kind):
        raise ConfigError(f"{path} is a {found} run: continue it with `diffnas {found} --resume {path}`")
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{path}: no config.yaml to resume from (is it a diffnas run directory?)")
    return reload(load_yaml(path / "config.yaml"), overrides)


def _run_kind(path: Path) -> str | None:
    """``search`` or ``train``, from the files only that kind writes (config.yaml is alike for both)."""
    if any((path / name).is_file() for name in ("steps.jsonl", "genotypes.jsonl", "summary.json")):
        return "search"
    if any((path / name).is_file() for name in ("result.json", "genotype.json")):
        return "train"
    return None


@contextmanager
def _writing(out):
    """A full disk or an unwritable ``out`` is the machine's state, not a bug: one line, not a traceback."""
    try:
        yield
    except OSError as e:
        raise DiffnasError(f"{e.filename or out}: {e.strerror or e}") from None


# what a run directory holds once a run has started in it (a `diffnas run`: in its search/ and train/)
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoint.pt", "summary.json", "result.json")


def _check_out(out: Path, force: bool) -> None:
    """Refuse to start a run in a directory that holds one, unless ``force``: a finished run is not
    overwritten by a repeated command. Rank 0 decides (the others would see its first writes)."""
    if not out.is_dir() or not distributed.is_main():
        return
    parts = (out, out / "search", out / "train")
    for d in parts:
        RunDir(d).check_free()  # a live run: busy, whatever the flags
    if force or not any((d / f).is_file() for d in parts for f in RUN_FILES):
        return
    if any((out / f).is_file() for f in ("summary.json", "result.json", "train/result.json")):
        raise ConfigError(f"{out} holds a finished run; choose another --out, or replace it with --force")
    raise ConfigError(
        f"{out} holds a started run; continue it with --resume {out}, choose another --out, or replace it with --force"
    )


def _default_out(kind: str, cfg) -> Path:
    return Path("runs") / f"{kind}-{cfg.get('method', 'genotype')}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def draw(run_dir, genotype: Architecture) -> list[Path]:
    """Pictures of the architecture (its space draws them), and the architecture-weight plots of a search;
    never fatal. In a multi-process run only rank 0 draws."""
    from .report import plot_arch_weights

    paths = []
    if not distributed.is_main():
        return paths
    try:
        paths += genotype.draw(run_dir)
    except DiffnasError as e:
        print(f"diffnas: warning: {e}", file=sys.stderr)
    if (Path(run_dir) / "metrics.jsonl").is_file() and '"arch_weights"' in (
        Path(run_dir) / "metrics.jsonl"
    ).read_text():
        paths += plot_arch_weights(run_dir)
    return paths


def report(target, out=None) -> Path:
    """The HTML report of a run directory (search, train or run) or of a sweep directory; returns its path."""
    from .report import write_run_report
    from .sweep import SPEC, TRIALS, load_records
    from .sweep.report import write_html

    path = Path(target)
    if not path.is_dir():
        raise DiffnasError(f"{path}: no such run or sweep directory")
    if (path / SPEC).is_file() or (path / TRIALS).is_file():
        return write_html(path, list(load_records(path).values()), out)
    return write_run_report(path, out)


def _auto_report(target) -> None:
    """The report written at the end of a command: cheap, and never fatal (the run's results are already saved)."""
    if not distributed.is_main():
        return
    try:
        print(f"report: {report(target)}")
    except Exception as e:  # a report bug or a full disk must not turn a finished run into a failure
        print(f"diffnas: warning: no report written for {target}: {type(e).__name__}: {e}", file=sys.stderr)


def search(
    out=None,
    resume=None,
    config=None,
    preset=None,
    progress=True,
    callbacks=None,
    force=False,
    *,
    report=True,
    **overrides,
) -> SearchResult:
    """Search (or resume one); ``force``: reuse an ``out`` that holds a run; ``report``: write report.html."""
    cfg = _config(resume, config, preset, overrides, "search")
    out = Path(resume or out or _default_out("search", cfg))
    _check_out(out, force or bool(resume))
    with _writing(out):
        result = _search(cfg, out, resume=bool(resume), progress=progress, callbacks=callbacks)
    draw(out, result.genotype)
    if report:
        _auto_report(out)
    return result


def train(
    genotype=None,
    out=None,
    resume=None,
    config=None,
    preset=None,
    progress=True,
    callbacks=None,
    force=False,
    *,
    report=True,
    **overrides,
) -> TrainResult:
    """Retrain ``genotype`` (an Architecture, a genotype file or a run directory) from scratch, or resume."""
    if genotype is not None and not isinstance(genotype, Architecture):
        genotype = load_architecture(genotype)
    if resume:
        cfg = _config(resume, config, preset, overrides, "train")
        saved = load_architecture(Path(resume) / "genotype.json")
        if genotype is not None and genotype.to_dict() != saved.to_dict():
            raise ConfigError(f"--resume continues {resume} with its own genotype.json; --genotype names another")
        genotype = saved
    else:  # the architecture says its space, and with it the retraining protocol
        overrides.setdefault("space", genotype.space)
        cfg = _config(None, config, preset, overrides)
    out = Path(resume or out or _default_out("train", cfg))
    _check_out(out, force or bool(resume))
    with _writing(out):
        result = _train(cfg, genotype, out, resume=bool(resume), progress=progress, callbacks=callbacks)
    if report:
        _auto_report(out)
    return result


def run(out=None, resume=None, config=None, preset=None, progress=True, force=False, **overrides):
    """Search, derive, retrain, report: ``out/search`` and ``out/train``; ``force``: reuse an ``out`` that
    holds a run."""
    if resume:
        out = Path(resume)
        s = search(resume=out / "search", config=config, preset=preset, progress=progress, report=False, **overrides)
        if (out / "train" / "config.yaml").is_file():
            t = train(resume=out / "train", progress=progress, report=False, **overrides)
        else:  # the retraining had not started: the search's settings, with what this resume changes
            kept = merge(_train_overrides(out / "search"), overrides, allow_new=True)
            t = train(s.genotype, out=out / "train", progress=progress, report=False, **kept)
        _auto_report(out)
        return s, t
    cfg = _config(None, config, preset, overrides)
    out = Path(out or _default_out("run", cfg))
    _check_out(out, force)
    common = dict(config=config, preset=preset, progress=progress, force=True, report=False)
    s = search(out=out / "search", **common, **overrides)
    t = train(s.genotype, out=out / "train", **common, **overrides)
    _auto_report(out)
    return s, t


def sweep(out, methods=None, seeds=None, grid=None, config=None, preset=None, **options):
    """Many trials, methods x grid values x seeds, each a fresh ``run`` process: see ``diffnas.sweep``.

    ``grid``: ``{"search.a_lr": ["3e-4", "6e-4"]}`` or ``["search.a_lr=3e-4,6e-4"]``. ``options``: the
    sweep's ``backend``, ``workers``, ``address``, ``cpus_per_trial``, ``gpus_per_trial``, ``search_only``
    and ``log``; any other keyword is a config override for every trial, as in ``run``.
    """
    from . import sweep as _sweep

    keys = ("backend", "workers", "address", "cpus_per_trial", "gpus_per_trial", "search_only", "log")
    kwargs = {k: options.pop(k) for k in keys if k in options}
    result = _sweep.run_sweep(out, methods, seeds, grid, config=config, preset=preset, overrides=options, **kwargs)
    _auto_report(result.out)
    return result


def _train_overrides(search_dir) -> dict:
    saved = load_yaml(Path(search_dir) / "config.yaml")
    keys = ("dataset", "data_dir", "subset", "image_size", "seed", "device", "precision", "train")
    return {k: saved[k] for k in keys if k in saved}


def subset(data_dir, per_class: float, out, seed: int = 0, exclude=None) -> int:
    """Write ``per_class`` of each class of ``data_dir/train`` (seeded; none of ``exclude``'s files) as a file
    list, one ``<class>/<file>`` a line: the reproducible ImageNet search subsets. Returns the number of images."""
    from .data.stream import per_class_subset, read_file_list

    lines = per_class_subset(Path(data_dir) / "train", per_class, seed, read_file_list(exclude) if exclude else ())
    with _writing(out):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("".join(f"{line}\n" for line in lines))
    return len(lines)


def show(target, benchmark=None, arch_column: str = "arch", metrics=None) -> list[str]:
    """Print-ready lines for a genotype or run directory; draws its cells (and weights plots) beside it.

    ``benchmark``: a benchmark table (CSV) to look the architecture up in (its ``arch_column`` and ``metrics``)."""
    path = architecture_path(target)
    genotype = load_architecture(path)
    folder = path.parent
    lines = [str(genotype)]
    if benchmark:
        table = BenchmarkTable.load(benchmark, arch_column, metrics)
        lines.append(_lookup_line(table.lookup(genotype), table.path))
    lines += [f"wrote {p}" for p in draw(folder, genotype)]
    return lines


def summary_lines(search: SearchResult | None = None, train: TrainResult | None = None) -> str:
    rows = []
    if search is not None:
        rows += [
            "== search ==",
            str(search.genotype),
            f"val {search.metric} (supernet) {search.val_score:.4f} | {search.seconds / 60:.1f} min | "
            f"peak memory {search.peak_memory_mb:.0f} MB | {search.run_dir}",
        ]
        if search.lookup:
            rows.append(_lookup_line(search.lookup))
    if train is not None:
        rows += [
            "== retrain ==",
            " | ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in (train.scores or {}).items() if "loss" not in k)
            + f" | params {train.params_m:.3f} M | FLOPs {train.flops_m:.1f} M | "
            f"{train.seconds / 60:.1f} min | peak memory {train.peak_memory_mb:.0f} MB | {train.run_dir}",
        ]
        if train.lookup:
            rows.append(_lookup_line(train.lookup))
    return "\n".join(rows)


def _lookup_line(lookup: dict, path=None) -> str:
    where = f" ({path})" if path else ""
    return f"benchmark look-up{where}: " + ", ".join(f"{k} {v:g}" for k, v in lookup.items())


def convert_benchmark(source, out, api: str = "nats", hp: str = "200", log=None) -> int:
    """A benchmark table (CSV) from the official NATS-Bench / NAS-Bench-201 files; see ``diffnas.data.benchmark``."""
    with _writing(out):
        return convert(source, out, api=api, hp=hp, log=log)
