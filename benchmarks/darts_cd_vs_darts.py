"""DARTS-CD, its warm-up and max-alpha against DARTS on the Fashion-MNIST proxy: search, retrain, test accuracy.

Proxy scale: ``--subset 2000 --image-size 16``; search 4 epochs, C=8, 5 cells, batch
64; retraining 4 epochs, C=16, 6 cells. The warm-up is scaled to the 4-epoch search:
2 epochs (sign flips at the start of epochs 1 and 2), ``darts-cd-nowarmup`` has none.
Every other setting is the method's own default. Each (variant, seed) is one
``diffnas run`` in its own process; a finished run is not repeated, so the grid can be
filled one locked command at a time:

    flock /tmp/diffnas-heavy.lock python benchmarks/darts_cd_vs_darts.py --only darts-cd --seeds 0 1
    ...
    python benchmarks/darts_cd_vs_darts.py   # table only

writes benchmarks/results/darts_cd_vs_darts.json (runs under runs/darts_cd_vs_darts/).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROXY = ["--subset", "2000", "--image-size", "16", "--no-progress"]
SETS = {
    "search.epochs": 4,
    "search.channels": 8,
    "search.layers": 5,
    "search.batch_size": 64,
    "train.epochs": 4,
    "train.channels": 16,
    "train.layers": 6,
}
VARIANTS = {
    "darts": ("darts", {}),
    "darts-cd": ("darts-cd", {"search.warmup_epochs": 2}),
    "darts-cd-nowarmup": ("darts-cd", {"search.warmup_epochs": 0}),
    "max-alpha": ("max-alpha", {}),
}


def command(variant: str, seed: int, out: Path) -> list[str]:
    method, extra = VARIANTS[variant]
    cmd = [sys.executable, "-m", "diffnas", "run", "--method", method, *PROXY, "--seed", str(seed), "--out", str(out)]
    for k, v in {**SETS, **extra}.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def collect(run: Path) -> dict | None:
    s, t = run / "search" / "summary.json", run / "train" / "result.json"
    if not (s.is_file() and t.is_file()):
        return None
    search, train = json.loads(s.read_text()), json.loads(t.read_text())
    return {
        "test_acc": train["test_acc"],
        "params_m": train.get("params_m"),
        "search_seconds": search["seconds"],
        "search_peak_memory_mb": search["peak_memory_mb"],
        "supernet_val_acc": search["val_acc"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=list(VARIANTS), default=[], help="run these variants (if missing)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--runs", type=Path, default=ROOT / "runs/darts_cd_vs_darts")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/darts_cd_vs_darts.json")
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    for seed in args.seeds:
        for variant in args.only:
            run = args.runs / f"{variant}-s{seed}"
            if collect(run) is None:
                t0 = time.time()
                subprocess.run(command(variant, seed, run), check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
                print(f"{variant} seed {seed}: {time.time() - t0:.0f} s", file=sys.stderr)

    table: dict = {}
    for variant in VARIANTS:
        runs = {}
        for run in sorted(args.runs.glob(f"{variant}-s*")):
            res = collect(run)
            if res is not None and run.name.removeprefix(f"{variant}-s").isdigit():
                runs[int(run.name.removeprefix(f"{variant}-s"))] = res
        if runs:
            table[variant] = {
                "seeds": sorted(runs),
                "median_test_acc": statistics.median(r["test_acc"] for r in runs.values()),
                "median_search_seconds": statistics.median(r["search_seconds"] for r in runs.values()),
                "median_search_peak_memory_mb": statistics.median(r["search_peak_memory_mb"] for r in runs.values()),
                "runs": runs,
            }
    if "darts" in table:
        for row in table.values():
            row["search_seconds_ratio_to_darts"] = round(
                row["median_search_seconds"] / table["darts"]["median_search_seconds"], 3
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "what": "test accuracy after retraining, search time and peak memory (whole process, CPU RSS) per variant",
        "command": "python " + " ".join(command("darts-cd", 0, Path("runs/darts_cd_vs_darts/darts-cd-s0"))[1:]),
        "note": "search seconds are whole searches on a shared 2-core machine: use the cost benchmark for ratios",
        "table": table,
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "runs"} for k, v in table.items()}, indent=1))


if __name__ == "__main__":
    main()
