"""RARTS against first-order DARTS on Fashion-MNIST at the proxy scale, 3 seeds each.

Proxy scale: 2000 training images at 16x16; search 4 epochs, C=8, 5 cells, batch 64;
retraining 4 epochs, C=16, 6 cells. Both methods use their defaults (RARTS: lambda =
beta = 1, y a copy of w, no latency term). Reported per run: skip connections in the
found normal and reduction cells (the paper's "architecture collapse"), the retrained
test accuracy, search time and peak memory. Each run is one ``python -m diffnas run``
under the shared heavy-job lock; the order of the two methods alternates seed by seed.

    python benchmarks/rarts_vs_darts.py      # takes the lock per run; resumable

writes benchmarks/results/rarts_vs_darts.json (run directories under runs/rarts_vs_darts/).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from proxy import LOCK, PROXY, ROOT, skips
from proxy import env as proxy_env

ATTEMPTS = 4


def one_run(method: str, seed: int, out: Path, timeout: int, extra: list, lock: bool = True) -> None:
    cmd = [sys.executable, "-m", "diffnas", "run", "--method", method, *PROXY, *extra, "--seed", str(seed)]
    cmd += ["--out", str(out), "--no-progress"]
    env = proxy_env()
    t0 = time.time()
    for attempt in range(ATTEMPTS):
        # a run cut at the lock's time limit continues from its last epoch checkpoint
        started = (out / "search" / "config.yaml").is_file()
        run = (
            cmd
            if attempt == 0 and not started
            else [sys.executable, "-m", "diffnas", "run", "--resume", str(out), "--no-progress"]
        )
        locked = ["flock", LOCK] if lock else []
        proc = subprocess.run(
            [*locked, "timeout", str(timeout), *run], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if proc.returncode != 124:
            break
    if proc.returncode:
        raise SystemExit(f"{method} seed {seed} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    print(f"{method} seed {seed}: done in {time.time() - t0:.0f}s", flush=True)


def read_run(method: str, seed: int, out: Path) -> dict | None:
    if not (out / "train" / "result.json").is_file():
        return None
    summary = json.loads((out / "search" / "summary.json").read_text())
    result = json.loads((out / "train" / "result.json").read_text())
    g = summary["genotype"]
    return {
        "method": method,
        "seed": seed,
        "skip_normal": skips(g, "normal"),
        "skip_reduce": skips(g, "reduce"),
        "test_acc": result["test_acc"],
        "params_m": result.get("params_m"),
        "search_val_acc": summary["val_acc"],
        "search_s": summary["seconds"],
        "search_peak_memory_mb": summary["peak_memory_mb"],
        "train_s": result.get("seconds"),
        "genotype": g,
    }


def write(path: Path, runs: list, methods: list, args) -> None:
    summary = {}
    for m in methods:
        rs = [r for r in runs if r["method"] == m]
        if rs:
            summary[m] = {
                "seeds": [r["seed"] for r in rs],
                "skip_normal": [r["skip_normal"] for r in rs],
                "skip_reduce": [r["skip_reduce"] for r in rs],
                "test_acc": [r["test_acc"] for r in rs],
                "test_acc_median": statistics.median(r["test_acc"] for r in rs),
                "skip_normal_median": statistics.median(r["skip_normal"] for r in rs),
                "search_s_median": statistics.median(r["search_s"] for r in rs),
                "search_peak_memory_mb_median": statistics.median(r["search_peak_memory_mb"] for r in rs),
            }
    if "darts" in summary and "rarts" in summary:
        d, r = summary["darts"], summary["rarts"]
        summary["rarts_over_darts_search_time"] = r["search_s_median"] / d["search_s_median"]
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"protocol": {"proxy": PROXY, "extra": args.extra, "seeds": args.seeds}, "summary": summary, "runs": runs}
    path.write_text(json.dumps(doc, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["darts", "rarts"])
    ap.add_argument("--extra", nargs="*", default=[], help="more `diffnas run` flags for every run")
    ap.add_argument("--timeout", type=int, default=590, help="seconds per locked run")
    ap.add_argument("--no-lock", action="store_true", help="the caller holds the heavy-job lock")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rarts_vs_darts.json"))
    args = ap.parse_args()
    runs_dir = ROOT / "runs" / "rarts_vs_darts"
    for seed in args.seeds:
        for method in args.methods if seed % 2 == 0 else args.methods[::-1]:
            out = runs_dir / f"{method}-s{seed}"
            if read_run(method, seed, out) is None:
                one_run(method, seed, out, args.timeout, args.extra, lock=not args.no_lock)
    # the table is rebuilt from every finished run directory, so parallel invocations do not race
    runs = []
    for d in sorted(runs_dir.glob("*-s*")):
        method, _, seed = d.name.rpartition("-s")
        r = read_run(method, int(seed), d)
        if r is not None:
            runs.append(r)
    write(Path(args.out), runs, sorted({r["method"] for r in runs}), args)
    for r in runs:
        print(f"{r['method']} seed {r['seed']}: skips {r['skip_normal']}/{r['skip_reduce']} test {r['test_acc']:.4f}")


if __name__ == "__main__":
    main()
