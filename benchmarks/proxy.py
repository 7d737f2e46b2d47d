"""What the method comparisons share: the Fashion-MNIST proxy scale, the heavy-job lock, the run environment.

Proxy scale: 2000 training images at 16x16; search 4 epochs, C=8, 5 cells, batch 64;
retraining 4 epochs, C=16, 6 cells. Each comparison passes these flags to
``python -m diffnas run`` (or ``search``: the ``train.*`` keys are ignored there).

The cost scripts (``*_cost.py``) are configurations of ``diffnas bench``: ``bench_args``
gives their shared options, ``bench`` runs ``diffnas.bench.run_bench`` with the script's
scale and overrides, ``write`` prints the table and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = "/tmp/diffnas-heavy.lock"  # one heavy job at a time on a shared machine
SEARCH = [
    "--subset", "2000", "--image-size", "16",
    "--set", "search.epochs=4", "--set", "search.channels=8", "--set", "search.layers=5",
    "--set", "search.batch_size=64",
]  # fmt: skip
PROXY = [*SEARCH, "--set", "train.epochs=4", "--set", "train.channels=16", "--set", "train.layers=6"]


def env() -> dict:
    """This checkout's sources, one thread per process (two threads on a busy 2-core machine spin-wait)."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def skips(genotype: dict, cell: str = "normal") -> int:
    """Skip connections among a found cell's ops: the "architecture collapse" the papers count."""
    return sum(op == "skip_connect" for op, _ in genotype[cell])


# the proxy search scale as `diffnas bench` arguments (one-channel 16x16 inputs, as Fashion-MNIST at 16x16)
BENCH_PROXY = {"channels": 8, "layers": 5, "batch_size": 64, "image_size": 16, "in_channels": 1}
# --tiny: a seconds-long check that a cost script runs (1 round, 1 timed and 1 counted step)
BENCH_TINY = {"channels": 4, "layers": 3, "batch_size": 8, "image_size": 8}


def bench_args(doc: str, methods: list[str], rounds: int, steps: int, warmup: int = 1) -> argparse.ArgumentParser:
    """The options every cost script shares (its own defaults for methods, rounds and steps)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(methods), help="comma-separated; NAME[KEY=VALUE,...] entries too")
    ap.add_argument("--rounds", type=int, default=rounds, help="alternate the methods this many times; medians")
    ap.add_argument("--steps", type=int, default=steps, help="timed steps per method and round")
    ap.add_argument("--warmup", type=int, default=warmup, help="untimed steps first")
    ap.add_argument("--saved-steps", type=int, default=2, help="steps counting the tensors saved for backward")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="JSON file (default: the script's file in benchmarks/results; none with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="C=4, L=3, B=8, H=8, 1 round of 1 step: checks the script")
    return ap


def bench(args, scale: dict, sets: dict | None = None, log_prefix: str = "", **spec) -> dict:
    """``run_bench`` of this checkout on ``args.methods`` at ``scale`` with ``sets``, one thread per process."""
    sys.path.insert(0, str(ROOT / "src"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the measuring subprocesses inherit it
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    from diffnas.bench import parse_methods, run_bench

    runs = {"rounds": args.rounds, "steps": args.steps, "warmup": args.warmup, "saved_steps": args.saved_steps}
    runs.update({k: spec.pop(k) for k in list(spec) if k in runs})  # the script's own (e.g. one step at a scale)
    if args.tiny:
        scale = {**scale, **BENCH_TINY}
        runs = {"rounds": 1, "steps": 1, "warmup": 1, "saved_steps": min(runs["saved_steps"], 1)}
    rounds = runs.pop("rounds")
    return run_bench(
        parse_methods(args.methods),
        rounds=rounds,
        log=lambda line: print(log_prefix + line, file=sys.stderr, flush=True),
        device=args.device,
        sets=sets or {},
        **scale,
        **runs,
        **spec,
    )


def write(args, name: str, result: dict, tables: dict | None = None) -> Path | None:
    """Print the bench table(s) and write ``result`` to ``--out`` or benchmarks/results/``name`` (not with --tiny)."""
    from diffnas.bench import format_table

    for title, report in (tables or {"": result}).items():
        if title:
            print(f"== {title} ==")
        print(format_table(report))
    out = Path(args.out) if args.out else (None if args.tiny else ROOT / "benchmarks" / "results" / name)
    if out is None:
        print("--tiny: nothing written (give --out to keep it)")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return out
