"""Search-step cost of PC-DARTS and IDARTS against DARTS (first order), one config, one run.

All three methods get the same config: the proxy search scale (C=8, 5 cells, batch 64,
16x16 one-channel inputs, 10 classes), so the batch size is common (PC-DARTS's paper
batch of 256 is overridden). Every method is measured at epoch 49 of 50 with its
architecture steps on, so IDARTS backtracks zeta = 5 edges per cell type in every step.

Each measurement is a fresh worker process (its peak RSS is its own) that builds the
method, runs one warm-up step, then ``--steps`` timed full steps (architecture step +
weight step). Methods are alternated round by round so a slow phase of the shared
machine hits all of them; the report gives medians and the ratios to ``darts``.
Because IDARTS differs from PC-DARTS only by a few small tensor operations, a second
measurement alternates the two step by step in one process (the median of the per-pair
ratios of their architecture steps) and times the backtracking alone.

Memory, on CPU (no GPU here):
- ``saved_mb``: the bytes of the distinct tensors autograd saves for backward in one
  forward of the supernet (what PC-DARTS's partial channels cut), counted with
  ``torch.autograd.graph.saved_tensors_hooks``; also at the DARTS search scale (C=16,
  8 cells, batch 64, 32x32) where it is the number that decides the GPU memory.
- ``rss_growth_mb`` / ``peak_rss_mb``: the worker's peak RSS growth over the steps and
  its peak RSS (noisy: the allocator keeps freed memory).

    flock /tmp/diffnas-heavy.lock python benchmarks/pc_darts_cost.py

writes benchmarks/results/pc_darts_cost.json.
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
METHODS = ("darts", "pc-darts", "idarts")
PROXY = {"scale": {"channels": 8, "layers": 5, "batch_size": 64, "epochs": 50}, "image": 16}
DARTS_SCALE = {"scale": {"channels": 16, "layers": 8, "batch_size": 64, "epochs": 50}, "image": 32}
CLASSES = 10


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(method: str, scale: dict):
    import torch

    from diffnas.catalog import resolve
    from diffnas.methods import build_method
    from diffnas.spaces import get_space

    torch.manual_seed(0)
    search = {**scale, "arch_start_epoch": 0}
    cfg = resolve(method, overrides={"search": search})
    return build_method(cfg, get_space(cfg.space, cfg.search.nodes), 1, CLASSES, "cpu")


def saved_mb(method: str, setting: dict) -> float:
    """MB of distinct tensors saved for backward by one training-mode forward and loss."""
    import torch
    import torch.nn.functional as F

    m = build(method, setting["scale"])
    n, s = setting["scale"]["batch_size"], setting["image"]
    x, y = torch.randn(n, 1, s, s), torch.randint(0, CLASSES, (n,))
    seen: dict = {}

    def pack(t):
        if t.layout == torch.strided and t.device.type == "cpu":
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(m.net(x), y)
    del loss
    params = {p.data_ptr() for p in m.net.parameters()}
    return sum(b for ptr, b in seen.items() if ptr not in params) / 2**20


class FixedVal:
    """A val stream that always returns one batch."""

    def __init__(self, b):
        self.b = b

    def next(self):
        return self.b


def random_batches(g):
    """A function drawing random proxy-scale batches (one input channel) from the generator ``g``."""
    import torch

    n, s = PROXY["scale"]["batch_size"], PROXY["image"]
    return lambda: (torch.randn(n, 1, s, s, generator=g), torch.randint(0, CLASSES, (n,), generator=g))


def worker(method: str, steps: int) -> dict:
    import torch

    m = build(method, PROXY["scale"])
    g = torch.Generator().manual_seed(0)
    batch = random_batches(g)
    m.epoch_start(49, 100)  # arch steps on; IDARTS: zeta = floor((49 - 25) * 0.015 * 14) = 5
    batches = [(batch(), batch()) for _ in range(steps + 1)]
    base = rss_mb()
    times, backtracked = [], 0
    for i, (train_b, val_b) in enumerate(batches):
        t0 = time.perf_counter()
        rec = m.step(train_b, FixedVal(val_b))
        t1 = time.perf_counter()
        if i:
            times.append(t1 - t0)
        backtracked += sum(len(v) for v in rec.get("backtracked", {}).values())
    return {
        "method": method,
        "step_s": times,
        "rss_growth_mb": rss_mb() - base,
        "peak_rss_mb": rss_mb(),
        "weight_params": sum(p.numel() for p in m.weights),
        "backtracked_edges_per_step": backtracked / len(batches),
    }


def paired(steps: int) -> dict:
    """pc-darts and idarts in one process, step by step alternated: the idarts/pc-darts ratio per pair,
    and the backtracking alone (rank + correction on the [14, 8] tensors) timed over many calls."""
    import torch

    from diffnas.spaces import CELL_TYPES

    ms = {name: build(name, PROXY["scale"]) for name in ("pc-darts", "idarts")}
    g = torch.Generator().manual_seed(0)
    batch = random_batches(g)
    for m in ms.values():
        m.epoch_start(49, 100)
    ratios = []
    for i in range(steps + 1):
        train_b, val_b = batch(), batch()
        t = {}
        for name in ("pc-darts", "idarts") if i % 2 == 0 else ("idarts", "pc-darts"):
            t0 = time.perf_counter()
            ms[name].arch_step(val_b, train_b)
            t[name] = time.perf_counter() - t0
            ms[name].weight_step(train_b)
        if i:
            ratios.append(t["idarts"] / t["pc-darts"])
    m = ms["idarts"]
    relax = m.relax
    a, b = relax.alphas["normal"].detach(), relax.betas["normal"].detach()
    a1, b1 = a + 1e-4 * torch.randn_like(a), b + 1e-4 * torch.randn_like(b)
    calls = 2000
    t0 = time.perf_counter()
    for _ in range(calls):
        for _t in CELL_TYPES:
            edges = m.edges_below(b1, 5)
            corr = m.backtrack_correction(b, a, a1, b, b1)
            a1[edges] + corr[edges]
    return {
        "arch_step_ratio_idarts_to_pcdarts": ratios,
        "backtrack_only_s_per_step": (time.perf_counter() - t0) / calls,
    }


def paired_summary(pair: dict) -> dict:
    return {
        "arch_step_ratio_median": statistics.median(pair["arch_step_ratio_idarts_to_pcdarts"]),
        "arch_step_ratios": pair["arch_step_ratio_idarts_to_pcdarts"],
        "backtrack_only_ms_per_step": 1000 * pair["backtrack_only_s_per_step"],
    }


def print_paired(result: dict) -> None:
    p = result["idarts_vs_pcdarts_paired"]
    print(
        f"paired, one process: idarts/pc-darts arch step x{p['arch_step_ratio_median']:.3f} (median of "
        f"{len(p['arch_step_ratios'])} pairs); backtracking alone {p['backtrack_only_ms_per_step']:.3f} ms/step"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per worker")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--saved", help=argparse.SUPPRESS)
    ap.add_argument("--paired", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--paired-only", action="store_true", help="redo only the paired idarts/pc-darts part")
    args = ap.parse_args()
    if args.paired:
        print(json.dumps(paired(args.steps)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps)))
        return
    if args.saved:
        print(json.dumps({k: saved_mb(args.saved, v) for k, v in (("proxy", PROXY), ("darts_scale", DARTS_SCALE))}))
        return

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def call(*extra):
        out = subprocess.run([sys.executable, __file__, *extra], capture_output=True, text=True, env=env, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    out = ROOT / "benchmarks" / "results" / "pc_darts_cost.json"
    if args.paired_only:
        result = json.loads(out.read_text())
        pair = call("--paired", "--steps", str(4 * args.steps * args.rounds // 2))
        result["idarts_vs_pcdarts_paired"] = paired_summary(pair)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print_paired(result)
        return

    runs = {m: [] for m in METHODS}
    t_start = time.time()
    for r in range(args.rounds):
        order = METHODS if r % 2 == 0 else METHODS[::-1]
        for m in order:
            runs[m].append(call("--worker", m, "--steps", str(args.steps)))
            print(f"round {r} {m}: {statistics.median(runs[m][-1]['step_s']):.3f} s/step", flush=True)
    saved = {m: call("--saved", m) for m in METHODS}
    pair = call("--paired", "--steps", str(4 * args.steps * args.rounds // 2))

    result = {"config": {**PROXY, "classes": CLASSES, "rounds": args.rounds, "steps_per_round": args.steps}}
    result["machine"] = {"platform": platform.platform(), "python": sys.version.split()[0], "threads": 1}
    table = {}
    for m in METHODS:
        steps = [t for w in runs[m] for t in w["step_s"]]
        table[m] = {
            "step_s_median": statistics.median(steps),
            "step_s_all": steps,
            "saved_for_backward_mb": saved[m],
            "rss_growth_mb_median": statistics.median(w["rss_growth_mb"] for w in runs[m]),
            "peak_rss_mb_median": statistics.median(w["peak_rss_mb"] for w in runs[m]),
            "weight_params": runs[m][0]["weight_params"],
            "backtracked_edges_per_step": runs[m][0]["backtracked_edges_per_step"],
        }
    for m in METHODS:
        d = table["darts"]
        table[m]["ratio_to_darts"] = {
            "step_time": table[m]["step_s_median"] / d["step_s_median"],
            "saved_for_backward_proxy": table[m]["saved_for_backward_mb"]["proxy"]
            / d["saved_for_backward_mb"]["proxy"],
            "saved_for_backward_darts_scale": table[m]["saved_for_backward_mb"]["darts_scale"]
            / d["saved_for_backward_mb"]["darts_scale"],
            "peak_rss": table[m]["peak_rss_mb_median"] / d["peak_rss_mb_median"],
        }
    result["methods"] = table
    result["idarts_vs_pcdarts_paired"] = paired_summary(pair)
    result["wall_s"] = time.time() - t_start
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for m in METHODS:
        r = table[m]["ratio_to_darts"]
        print(
            f"{m:9s} step {table[m]['step_s_median']:.3f} s (x{r['step_time']:.2f})  saved-for-backward "
            f"{table[m]['saved_for_backward_mb']['proxy']:.1f} MB (x{r['saved_for_backward_proxy']:.2f}), "
            f"DARTS scale {table[m]['saved_for_backward_mb']['darts_scale']:.0f} MB "
            f"(x{r['saved_for_backward_darts_scale']:.2f})  peak RSS x{r['peak_rss']:.2f}"
        )
    print_paired(result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
