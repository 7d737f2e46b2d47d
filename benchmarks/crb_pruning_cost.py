"""CRB's progressive pruning saves real time: a training step with ops pruned against one without.

Proxy-scale search network (C=8, 5 cells, batch 64, 16x16 inputs, `darts-nonone` ops):
the same CRB supernet is timed (forward + backward + SGD step) with nothing pruned, then
with the alphas of a given fraction of each edge's ops driven to 0 so that `step_start`
prunes them. Arms alternate; medians of the repeats. Timing ratios only.

    flock /tmp/diffnas-heavy.lock python benchmarks/crb_pruning_cost.py

writes benchmarks/results/crb_pruning_cost.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from diffnas.catalog import resolve
from diffnas.methods import build_method
from diffnas.spaces import CELL_TYPES, get_space

ROOT = Path(__file__).resolve().parent.parent


def make(pruned_ops: int, seed: int = 0):
    torch.manual_seed(seed)
    cfg = resolve(
        "darts", overrides={"space": "darts-nonone", "search": {"channels": 8, "layers": 5, "relaxation": "crb"}}
    )
    m = build_method(cfg, get_space("darts-nonone"), 1, 10, "cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in CELL_TYPES:
            a = m.relax.alphas[t]
            for e in range(a.shape[0]):  # prune a random `pruned_ops` of each edge's 7 ops
                a[e, torch.randperm(a.shape[1], generator=g)[:pruned_ops]] = 0.0
    m.relax.step_start()
    return m


def timed_step(m, x, y) -> float:
    t0 = time.perf_counter()
    m.relax.step_start()
    m.weight_step((x, y))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--pruned", type=int, nargs="+", default=[0, 3, 5])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "crb_pruning_cost.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    x, y = torch.randn(64, 1, 16, 16), torch.randint(0, 10, (64,))
    methods = {k: make(k) for k in args.pruned}
    for m in methods.values():
        m.epoch_start(0, 1)
        for _ in range(2):  # warm-up
            timed_step(m, x, y)
    times = {k: [] for k in methods}
    for _ in range(args.repeats):
        for k, m in methods.items():
            times[k].append(timed_step(m, x, y))
    base = statistics.median(times[args.pruned[0]])
    result = {
        str(k): {
            "pruned_ops_per_edge": k,
            "computed_ops_per_edge": 7 - k,
            "step_s_median": statistics.median(v),
            "ratio_to_unpruned": statistics.median(v) / base,
        }
        for k, v in times.items()
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"repeats": args.repeats, "results": result}, indent=1) + "\n")
    for r in result.values():
        print(r)


if __name__ == "__main__":
    main()
