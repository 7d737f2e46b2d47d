"""Search-step cost of NASP against DARTS (first and second order) on one config, in one run.

Each measurement is a fresh worker process (so its peak RSS is its own) that builds the
method at the proxy scale (C=8, 5 cells, batch 64, 16x16 one-channel inputs, 10
classes), runs one warm-up step and then ``--steps`` timed steps, timing the
architecture step and the weight step separately. Methods are alternated round by
round so a slow phase of the shared machine hits all of them; the report gives
medians over all timed steps and the ratios to ``darts`` on the same space.
Memory on CPU: the growth of the worker's peak RSS over the steps (what the steps
allocate on top of the built model and data), and the peak RSS itself; on CUDA the
peak allocated memory over the steps.

    flock /tmp/diffnas-heavy.lock python benchmarks/nasp_cost.py

writes benchmarks/results/nasp_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCALE = {"channels": 8, "layers": 5, "batch_size": 64, "epochs": 4}
IMAGE, CLASSES = 16, 10


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(method: str, space: str, steps: int, device: str) -> dict:
    import torch

    from diffnas.catalog import resolve
    from diffnas.methods import build_method
    from diffnas.spaces import get_space

    torch.manual_seed(0)
    method, _, arch_ops = method.partition(":")  # nasp:selected = search.nasp_arch_ops selected
    search = dict(SCALE, **({"nasp_arch_ops": arch_ops} if arch_ops else {}))
    cfg = resolve(method, overrides={"space": space, "search": search})
    m = build_method(cfg, get_space(space, cfg.search.nodes), 1, CLASSES, device)
    g = torch.Generator().manual_seed(0)
    n = cfg.search.batch_size

    def batch():
        x = torch.randn(n, 1, IMAGE, IMAGE, generator=g).to(device)
        return x, torch.randint(0, CLASSES, (n,), generator=g).to(device)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    m.epoch_start(0, 100)
    batches = [(batch(), batch()) for _ in range(steps + 1)]
    base_rss = rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated() / 2**20
    arch, weight = [], []
    for i, (train_b, val_b) in enumerate(batches):
        # the method's own step, split into its two halves (both methods: arch step, then weight step)
        m.relax.step_start()
        sync()
        t0 = time.perf_counter()
        m.arch_step(val_b) if method == "nasp" else m.arch_step(val_b, train_b)
        sync()
        t1 = time.perf_counter()
        m.weight_step(train_b)
        sync()
        t2 = time.perf_counter()
        if i:  # the first step warms up
            arch.append(t1 - t0)
            weight.append(t2 - t1)
    out = {
        "arch_s": arch,
        "weight_s": weight,
        "step_s": [a + w for a, w in zip(arch, weight)],
        "peak_rss_mb": rss_mb(),
        "step_rss_growth_mb": rss_mb() - base_rss,
    }
    if device.startswith("cuda"):
        out["step_cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20 - base_cuda
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["darts", "darts2", "nasp", "nasp:selected"])
    p.add_argument("--spaces", nargs="+", default=["darts-nonone", "nasp12"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/nasp_cost.json"))
    p.add_argument("--worker", nargs=2, metavar=("METHOD", "SPACE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps, args.device)))
        return

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    runs: dict = {}
    t_start = time.time()
    for r in range(args.rounds):
        for space in args.spaces:
            for method in args.methods:
                cmd = [sys.executable, __file__, "--worker", method, space, "--steps", str(args.steps)]
                res = subprocess.run(cmd + ["--device", args.device], capture_output=True, text=True, env=env)
                if res.returncode:
                    raise SystemExit(f"worker {method} {space} failed:\n{res.stderr}")
                runs.setdefault(space, {}).setdefault(method, []).append(json.loads(res.stdout.splitlines()[-1]))
                print(f"round {r + 1}/{args.rounds} {space:13s} {method:7s} done", file=sys.stderr)

    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    runs = {**previous.get("raw", {}), **runs}  # a run for some spaces keeps the others' results
    summary: dict = {}
    for space, by_method in runs.items():
        rows = {}
        for method, results in by_method.items():
            row = {}
            for key in ("arch_s", "weight_s", "step_s"):
                row[f"median_{key}"] = statistics.median(v for res in results for v in res[key])
            for key in ("step_rss_growth_mb", "peak_rss_mb", "step_cuda_peak_mb"):
                if key in results[0]:
                    row[f"median_{key}"] = statistics.median(res[key] for res in results)
            rows[method] = row
        if "darts" in rows:
            base = rows["darts"]
            for row in rows.values():
                row["ratio_to_darts"] = {
                    k.removeprefix("median_"): round(row[k] / base[k], 3) if base[k] else None
                    for k in list(row)
                    if k.startswith("median_")
                }
        summary[space] = rows

    result = {
        "what": "median search-step time (architecture step + weight step) and step memory; ratios to darts",
        "command": "flock /tmp/diffnas-heavy.lock python benchmarks/nasp_cost.py",
        "config": {**SCALE, "image_size": IMAGE, "in_channels": 1, "classes": CLASSES, "device": args.device},
        "rounds": args.rounds,
        "timed_steps_per_round": args.steps,
        "machine": {"platform": platform.platform(), "threads": os.environ.get("OMP_NUM_THREADS")},
        "seconds_last_invocation": round(time.time() - t_start, 1),
        "summary": summary,
        "raw": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
