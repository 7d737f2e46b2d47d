"""Search-step cost of DARTS-CD and max-alpha against DARTS (first order) on one config, in one run.

Every measurement is a fresh worker process (its peak RSS is its own). The worker
builds the method at B=32, 16x16 inputs with 3 channels, C=8, 5 cells, 10 classes
(every other setting is the method's own default; the DARTS space with `none`), then
runs the method's own ``step`` (architecture step on a val batch, then weight step):
one warm-up step and ``--steps`` timed steps. Methods alternate within each round so a
slow phase of the shared machine hits all of them. Reported: the median step time
over all timed steps, and memory as the growth of the worker's peak RSS over the
steps (what the steps allocate on top of the built model and data) and the peak RSS
itself; on CUDA the peak allocated memory over the steps. Ratios are to ``darts``.

    flock /tmp/diffnas-heavy.lock python benchmarks/darts_cd_cost.py

writes benchmarks/results/darts_cd_cost.json.
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
SCALE = {"channels": 8, "layers": 5, "batch_size": 32, "epochs": 25}
IMAGE, IN_CHANNELS, CLASSES = 16, 3, 10


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Fixed:
    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def next(self):
        self.i += 1
        return self.batches[self.i - 1]


def saved_activations_mb(m, batch) -> float:
    """What autograd keeps for the backward pass of one training forward (distinct storages), in MB.

    Deterministic, unlike RSS: the activation memory that dominates a search step's peak.
    """
    import torch

    seen: dict = {}

    def pack(t):
        if t.device.type != "meta":
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        return t

    m.relax.step_start()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = m.loss(batch)
    del loss
    params = {p.untyped_storage().data_ptr() for p in m.net.parameters()}
    return sum(n for ptr, n in seen.items() if ptr not in params) / 2**20


def worker(method: str, steps: int, device: str, layers: int) -> dict:
    import torch

    from diffnas.catalog import resolve
    from diffnas.methods import build_method
    from diffnas.spaces import get_space

    torch.manual_seed(0)
    cfg = resolve(method, overrides={"search": {**SCALE, "layers": layers}})
    m = build_method(cfg, get_space(cfg.space, cfg.search.nodes), IN_CHANNELS, CLASSES, device)
    g = torch.Generator().manual_seed(0)
    n = cfg.search.batch_size

    def batch():
        x = torch.randn(n, IN_CHANNELS, IMAGE, IMAGE, generator=g).to(device)
        return x, torch.randint(0, CLASSES, (n,), generator=g).to(device)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    m.epoch_start(0, 1000)
    train = [batch() for _ in range(steps + 1)]
    val = Fixed([batch() for _ in range(steps + 1)])
    base_rss = peak_rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated() / 2**20
    times = []
    for i, b in enumerate(train):
        sync()
        t0 = time.perf_counter()
        m.step(b, val)
        sync()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    out = {"step_s": times, "peak_rss_mb": peak_rss_mb(), "step_rss_growth_mb": peak_rss_mb() - base_rss}
    out["saved_activations_mb"] = saved_activations_mb(m, train[0])
    if device.startswith("cuda"):
        out["step_cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20 - base_cuda
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["darts", "darts-cd", "max-alpha"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--layers", type=int, default=SCALE["layers"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/darts_cd_cost.json"))
    p.add_argument("--worker", metavar="METHOD", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.device, args.layers)))
        return

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    runs: dict = {}
    t_start = time.time()
    for r in range(args.rounds):
        for method in args.methods:
            cmd = [sys.executable, __file__, "--worker", method, "--steps", str(args.steps)]
            cmd += ["--device", args.device, "--layers", str(args.layers)]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if res.returncode:
                raise SystemExit(f"worker {method} failed:\n{res.stderr}")
            runs.setdefault(method, []).append(json.loads(res.stdout.splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds} {method:9s} done", file=sys.stderr)

    rows = {}
    for method, results in runs.items():
        row = {"median_step_s": statistics.median(v for res in results for v in res["step_s"])}
        for key in ("saved_activations_mb", "step_rss_growth_mb", "peak_rss_mb", "step_cuda_peak_mb"):
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

    result = {
        "what": "median search-step time (architecture step + weight step) and step memory; ratios to darts",
        "command": "flock /tmp/diffnas-heavy.lock python benchmarks/darts_cd_cost.py",
        "config": {
            **SCALE,
            "layers": args.layers,
            "image_size": IMAGE,
            "in_channels": IN_CHANNELS,
            "classes": CLASSES,
            "space": "darts",
            "device": args.device,
        },
        "rounds": args.rounds,
        "timed_steps_per_round": args.steps,
        "machine": {"platform": platform.platform(), "threads": os.environ.get("OMP_NUM_THREADS")},
        "seconds": round(time.time() - t_start, 1),
        "summary": rows,
        "raw": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
