"""RARTS's latency penalty (eq. 5/8): a sweep of ``reg.latency`` on Fashion-MNIST at the proxy search scale.

Each weight runs one RARTS search (2000 images at 16x16, 4 epochs, C=8, 5 cells, batch 64,
seed 0) under the shared heavy-job lock. For each found genotype the derived network at
the proxy retraining scale (C=16, 6 cells, no auxiliary head) is timed on this machine:
one-image inference forwards in eval mode, networks alternated over ``--rounds`` rounds,
median milliseconds. Also reported: the parameter count and the ops of the normal
and reduction cells.

    python benchmarks/latency_sweep.py        # takes the lock per search; resumable

writes benchmarks/results/latency_sweep.json (run directories under runs/latency_sweep/).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from proxy import LOCK, ROOT, SEARCH
from proxy import env as proxy_env

sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from diffnas.spaces import DerivedNetwork, Genotype  # noqa: E402

ATTEMPTS = 4


def search(weight: float, seed: int, out: Path, timeout: int, lock: bool = True) -> None:
    if (out / "summary.json").is_file():
        return
    env = proxy_env()
    cmd = [sys.executable, "-m", "diffnas", "search", "--method", "rarts", *SEARCH, "--seed", str(seed)]
    cmd += ["--set", f"reg.latency={weight}", "--out", str(out), "--no-progress"]
    for attempt in range(ATTEMPTS):
        started = (out / "config.yaml").is_file()
        resume = [sys.executable, "-m", "diffnas", "search", "--resume", str(out), "--no-progress"]
        run = cmd if attempt == 0 and not started else resume
        locked = ["flock", LOCK] if lock else []
        cmd_line = [*locked, "timeout", str(timeout), *run]
        proc = subprocess.run(cmd_line, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 124:
            break
    if proc.returncode:
        raise SystemExit(f"latency {weight} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def time_nets(nets: dict, rounds: int, reps: int) -> dict:
    x = torch.randn(1, 1, 16, 16)
    times = {k: [] for k in nets}
    with torch.no_grad():
        for net in nets.values():
            for _ in range(3):
                net(x)
        for r in range(rounds):
            for k in list(nets) if r % 2 == 0 else list(nets)[::-1]:
                t0 = time.perf_counter()
                for _ in range(reps):
                    nets[k](x)
                times[k].append((time.perf_counter() - t0) / reps * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.02, 0.2, 2.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--timeout", type=int, default=590, help="seconds per locked search")
    ap.add_argument("--no-lock", action="store_true", help="the caller holds the heavy-job lock")
    ap.add_argument("--search-only", action="store_true", help="run the searches, time nothing")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latency_sweep.json"))
    args = ap.parse_args()
    runs = {}
    for w in args.weights:
        out = ROOT / "runs" / "latency_sweep" / f"lat{w:g}-s{args.seed}"
        search(w, args.seed, out, args.timeout, lock=not args.no_lock)
        runs[w] = out
        print(f"latency {w:g}: searched", flush=True)
    if args.search_only:
        return
    torch.set_num_threads(1)
    nets, rows = {}, []
    for w, out in runs.items():
        g = Genotype.load(out / "genotype.json")
        torch.manual_seed(0)
        nets[w] = DerivedNetwork(g, 16, 6, 10, in_channels=1).eval()
        rows.append({"weight": w, "genotype": g.to_dict()})
    with open(LOCK, "a") as lock:  # time the derived networks while no other heavy job runs
        if not args.no_lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
        lat = time_nets(nets, args.rounds, args.reps)
    result = []
    for row in rows:
        w, g = row["weight"], row["genotype"]
        net = nets[w]
        ops = {t: dict(Counter(op for op, _ in g[t])) for t in ("normal", "reduce")}
        result.append(
            {
                "weight": w,
                "derived_latency_ms": lat[w],
                "latency_vs_weight0": lat[w] / lat[args.weights[0]],
                "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
                "ops": ops,
                "genotype": g,
            }
        )
        print(f"latency {w:g}: derived {lat[w]:.3f} ms, params {result[-1]['params_m']:.4f} M, {ops}", flush=True)
    doc = {
        "protocol": {"search": SEARCH, "method": "rarts", "seed": args.seed, "timing": "batch 1, 16x16, eval, median"},
        "runs": result,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
