"""Search-step cost of PC-DARTS and IDARTS against DARTS (first order): a configuration of `diffnas bench`.

All three methods get the same config: the proxy search scale (C=8, 5 cells, batch 64,
16x16 one-channel inputs, 10 classes), so the batch size is common (PC-DARTS's paper
batch of 256 is overridden); `search.epochs=50`, `search.arch_start_epoch=0`, and every
step is one of epoch 49 (``--epoch 49``), so IDARTS backtracks zeta = 5 edges per cell
type in every step. The bench run gives the step time and its architecture and weight
phases, the tensors saved for backward per phase (what PC-DARTS's partial channels cut),
peak and step memory, ratios to darts. A second bench run counts the saved tensors at the
DARTS search scale (C=16, 8 cells, batch 64, 32x32), where they decide the GPU memory
(one step per method: its time means little).

What bench cannot express stays here (``paired``): IDARTS differs from PC-DARTS only by a
few small tensor operations, so the two alternate step by step in one process (the median
of the per-pair ratios of their architecture steps), the backtracking alone is timed over
many calls, and the edges IDARTS backtracked per step are counted.

    flock /tmp/diffnas-heavy.lock python benchmarks/pc_darts_cost.py       [--tiny: a seconds-long check]

is (plus the DARTS-scale run and the paired part)

    diffnas bench --methods darts,pc-darts,idarts --space darts --channels 8 --layers 5 --batch-size 64 \
        --image-size 16 --in-channels 1 --rounds 5 --steps 3 --warmup 1 --epoch 49 \
        --set search.epochs=50 --set search.arch_start_epoch=0

and writes benchmarks/results/pc_darts_cost.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from proxy import BENCH_PROXY, BENCH_TINY, ROOT, bench, bench_args, write

METHODS = ["darts", "pc-darts", "idarts"]
SETS = {"search": {"epochs": 50, "arch_start_epoch": 0}}
EPOCH = 49  # IDARTS: zeta = floor((49 - 25) * 0.015 * 14) = 5
DARTS_SCALE = {"channels": 16, "layers": 8, "batch_size": 64, "image_size": 32, "in_channels": 1}


def paired(steps: int, scale: dict, calls: int = 2000) -> dict:
    """pc-darts and idarts in one process, step by step alternated: the idarts/pc-darts ratio of the
    architecture steps per pair, the edges idarts backtracked per step, and the backtracking alone
    (rank + correction on the [14, 8] tensors) timed over ``calls`` calls."""
    import torch

    from diffnas.catalog import resolve
    from diffnas.methods import build_method
    from diffnas.spaces import space_from_config

    torch.set_num_threads(1)
    ms = {}
    for name in ("pc-darts", "idarts"):
        torch.manual_seed(0)
        search = {k: scale[k] for k in ("channels", "layers", "batch_size")} | SETS["search"]
        cfg = resolve(name, overrides={"space": "darts", "search": search})
        ms[name] = build_method(cfg, space_from_config(cfg), scale["in_channels"], 10, "cpu")
        ms[name].epoch_start(EPOCH, 100)
    g = torch.Generator().manual_seed(0)
    n, s = scale["batch_size"], scale["image_size"]

    def batch():
        return torch.randn(n, scale["in_channels"], s, s, generator=g), torch.randint(0, 10, (n,), generator=g)

    ratios, backtracked = [], []
    for i in range(steps + 1):
        train_b, val_b = batch(), batch()
        t = {}
        for name in ("pc-darts", "idarts") if i % 2 == 0 else ("idarts", "pc-darts"):
            ms[name].relax.step_start()
            t0 = time.perf_counter()
            rec = ms[name].arch_step(val_b, train_b)
            t[name] = time.perf_counter() - t0
            ms[name].weight_step(train_b)
            if name == "idarts":
                backtracked.append(sum(len(v) for v in rec.get("backtracked", {}).values()))
        if i:  # the first pair warms up
            ratios.append(t["idarts"] / t["pc-darts"])
    m = ms["idarts"]
    a, b = m.relax.alphas["normal"].detach(), m.relax.betas["normal"].detach()
    a1, b1 = a + 1e-4 * torch.randn_like(a), b + 1e-4 * torch.randn_like(b)
    t0 = time.perf_counter()
    for _ in range(calls):
        for _t in m.space.cell_types:
            edges = m.edges_below(b1, 5)
            corr = m.backtrack_correction(b, a, a1, b, b1)
            a1[edges] + corr[edges]
    return {
        "arch_step_ratio_median": statistics.median(ratios),
        "arch_step_ratios": ratios,
        "backtrack_only_ms_per_step": 1000 * (time.perf_counter() - t0) / calls,
        "backtracked_edges_per_step": statistics.median(backtracked),
    }


def print_paired(p: dict) -> None:
    print(
        f"paired, one process: idarts/pc-darts arch step x{p['arch_step_ratio_median']:.3f} (median of "
        f"{len(p['arch_step_ratios'])} pairs); backtracking alone {p['backtrack_only_ms_per_step']:.3f} ms/step; "
        f"idarts backtracked {p['backtracked_edges_per_step']:g} edges per step"
    )


def main() -> None:
    ap = bench_args(__doc__, METHODS, rounds=5, steps=3)
    ap.add_argument("--no-darts-scale", action="store_true", help="leave out the DARTS-scale saved-tensor count")
    ap.add_argument("--paired-only", action="store_true", help="redo only the paired idarts/pc-darts part")
    args = ap.parse_args()
    pair_steps = 2 if args.tiny else 4 * args.steps * args.rounds // 2
    pair_scale = {**BENCH_PROXY, **BENCH_TINY} if args.tiny else BENCH_PROXY
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "pc_darts_cost.json"
    if args.paired_only:
        sys.path.insert(0, str(ROOT / "src"))
        result = json.loads(out.read_text())
        result["idarts_vs_pcdarts_paired"] = paired(pair_steps, pair_scale, calls=20 if args.tiny else 2000)
        print_paired(result["idarts_vs_pcdarts_paired"])
        if not args.tiny:
            out.write_text(json.dumps(result, indent=1) + "\n")
        return

    t_start = time.time()
    result = {"command": "flock /tmp/diffnas-heavy.lock python benchmarks/pc_darts_cost.py"}
    result["proxy"] = bench(args, BENCH_PROXY, SETS, space="darts", epoch=EPOCH)
    tables = {"proxy scale": result["proxy"]}
    if not args.no_darts_scale:
        result["darts_scale"] = bench(
            args, DARTS_SCALE, SETS, log_prefix="DARTS scale ", space="darts", epoch=EPOCH,
            rounds=1, steps=1, warmup=0, saved_steps=1,
        )  # fmt: skip
        tables["DARTS scale (saved tensors; one step, its time means little)"] = result["darts_scale"]
    result["idarts_vs_pcdarts_paired"] = paired(pair_steps, pair_scale, calls=20 if args.tiny else 2000)
    result["wall_s"] = time.time() - t_start
    write(args, "pc_darts_cost.json", result, tables=tables)
    print_paired(result["idarts_vs_pcdarts_paired"])


if __name__ == "__main__":
    main()
