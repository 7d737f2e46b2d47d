"""DARTS against DARTS-PRIME on Fashion-MNIST at the proxy scale, 3 seeds each.

Proxy scale: 2000 training images at 16x16; search 4 epochs, C=8, 5 cells, batch 64;
retraining 4 epochs, C=16, 6 cells. Each method runs with its paper defaults: `darts`
alternates on a 50/50 split; `darts-prime` uses the FIMT schedule (r = 10, h0 = 1,
h_i = 1.05, lambda = 0.2), a 10/11 : 1/11 split and proximity regularization (rho = 0.1).
Optional arms (``--arms``): the Table 1 / Table S1 ablations `darts-cs10`, `darts-fimt`,
`darts-pr`, `darts-prime-crb`, `darts-admm`.

Reported per arm: skip connections in the found normal cell, retrained test accuracy
(mean, std, median), architecture steps, search time and search time per weight step.
Each run is one ``python -m diffnas run`` under the shared heavy-job lock; arms are
alternated seed by seed.

    python benchmarks/prime_vs_darts.py               # takes the lock per run itself

writes benchmarks/results/prime_vs_darts.json (runs under runs/prime_vs_darts/).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from proxy import LOCK, PROXY, ROOT, lines
from proxy import env as proxy_env

SPLIT_10 = ["--set", f"search.train_portion={10 / 11}"]
ARMS = {
    "darts": ["--method", "darts"],
    "darts-prime": ["--method", "darts-prime"],
    "darts-cs10": ["--method", "darts", "--schedule", "every:10", *SPLIT_10],
    "darts-fimt": ["--method", "darts", "--schedule", "fimt", *SPLIT_10],
    "darts-pr": ["--method", "darts", "--reg", "proximity"],
    "darts-prime-crb": ["--method", "darts-prime", "--space", "darts-nonone", "--activation", "crb"],
    "darts-admm": ["--method", "darts", "--reg", "admm"],
}


def one_run(arm: str, seed: int, out: Path, timeout: int) -> dict:
    cmd = [sys.executable, "-m", "diffnas", "run", *ARMS[arm], *PROXY, "--seed", str(seed)]
    cmd += ["--out", str(out), "--no-progress"]
    env = proxy_env()
    t0 = time.time()
    proc = subprocess.run(
        ["flock", LOCK, "timeout", str(timeout), *cmd], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"{arm} seed {seed} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    summary = json.loads((out / "search" / "summary.json").read_text())
    result = json.loads((out / "train" / "result.json").read_text())
    metrics = lines(out / "search" / "metrics.jsonl")
    steps = lines(out / "search" / "steps.jsonl")
    normal = summary["genotype"]["normal"]
    return {
        "arm": arm,
        "seed": seed,
        "skip_connects_normal": sum(op == "skip_connect" for op, _ in normal),
        "test_acc": result["test_acc"],
        "params_m": result.get("params_m"),
        "search_val_acc": summary["val_acc"],
        "search_s": summary["seconds"],
        "weight_steps": len(steps),
        "arch_steps": metrics[-1]["arch_steps"],
        "search_s_per_weight_step": summary["seconds"] / max(len(steps), 1),
        "search_peak_memory_mb": summary["peak_memory_mb"],
        "genotype": summary["genotype"],
        # Figure 3: the first epoch's FIMT, threshold and architecture steps
        "fimt_epoch0": [[s.get("fimt"), s.get("fimt_threshold"), s.get("arch_step")] for s in steps if s["epoch"] == 0]
        if "fimt" in steps[0]
        else None,
        "wall_s": time.time() - t0,
    }


def stats(values: list) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "median": statistics.median(values),
        "values": values,
    }


def write(out_path: Path, runs: list, arms: list) -> None:
    summary = {}
    for arm in arms:
        rs = sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"])
        if not rs:
            continue
        summary[arm] = {
            "seeds": [r["seed"] for r in rs],
            "skip_connects_normal": stats([r["skip_connects_normal"] for r in rs]),
            "test_acc": stats([r["test_acc"] for r in rs]),
            "arch_steps": stats([r["arch_steps"] for r in rs]),
            "weight_steps": stats([r["weight_steps"] for r in rs]),
            "search_s": stats([r["search_s"] for r in rs]),
            "search_s_per_weight_step": stats([r["search_s_per_weight_step"] for r in rs]),
        }
    if "darts" in summary:
        base = summary["darts"]
        for s in summary.values():
            s["search_s_ratio_to_darts_median"] = s["search_s"]["median"] / base["search_s"]["median"]
            s["per_weight_step_ratio_to_darts_median"] = (
                s["search_s_per_weight_step"]["median"] / base["search_s_per_weight_step"]["median"]
            )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(
        json.dumps(
            {"protocol": {"proxy": PROXY, "arms": {a: ARMS[a] for a in arms}}, "summary": summary, "runs": runs},
            indent=1,
        )
        + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=["darts", "darts-prime"], choices=list(ARMS))
    ap.add_argument("--timeout", type=int, default=590, help="seconds per locked run")
    ap.add_argument("--jobs", type=int, default=1, help="runs waiting on the lock at once")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prime_vs_darts.json"))
    args = ap.parse_args()
    out_path = Path(args.out)
    runs = []
    if out_path.is_file():  # resume: keep finished runs of the same protocol
        runs = [r for r in json.loads(out_path.read_text()).get("runs", []) if r["arm"] in ARMS]
    have = {(r["arm"], r["seed"]) for r in runs}
    arms_seen = list(dict.fromkeys([*(r["arm"] for r in runs), *args.arms]))
    todo = [
        (arm, seed)
        for seed in args.seeds
        for arm in (args.arms if seed % 2 == 0 else args.arms[::-1])
        if (arm, seed) not in have
    ]

    def run(job):
        arm, seed = job
        return one_run(arm, seed, ROOT / "runs" / "prime_vs_darts" / f"{arm}-s{seed}", args.timeout)

    # --jobs N queues N runs on the lock at once; the lock still lets only one run at a time
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in as_completed([pool.submit(run, job) for job in todo]):
            r = future.result()
            runs.append(r)
            print(
                f"{r['arm']} seed {r['seed']}: skips {r['skip_connects_normal']} test {r['test_acc']:.4f} "
                f"arch steps {r['arch_steps']}/{r['weight_steps']} search {r['search_s']:.0f}s",
                flush=True,
            )
            write(out_path, runs, arms_seen)
    write(out_path, runs, arms_seen)


if __name__ == "__main__":
    main()
