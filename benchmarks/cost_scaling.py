"""How the cost of a search step grows with the width (channels) and the batch size.

darts, darts-cd and nasp (those that exist), each at C = 8, 16, 32 (batch 32) and at
batch 16, 32, 64 (C = 8), with H = 16, L = 5, 3 input channels, in the DARTS space: the
median step time (and its architecture and weight phases), the memory the step adds (peak
RSS minus the process before its first step; CUDA: max allocated) and the tensors saved for
backward per step, each method in a fresh subprocess, methods alternating within every
setting. ``growth`` is the log-log slope between the smallest and largest setting (1.0:
linear in C or B).

    flock /tmp/diffnas-heavy.lock python benchmarks/cost_scaling.py

writes benchmarks/results/cost_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from diffnas.bench import machine, run_bench  # noqa: E402


def slope(xs, ys):
    if len(xs) < 2 or min(ys) <= 0:
        return None
    return math.log(ys[-1] / ys[0]) / math.log(xs[-1] / xs[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="darts,darts-cd,nasp")
    ap.add_argument("--channels", default="8,16,32")
    ap.add_argument("--batches", default="16,32,64")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sweep", choices=["channels", "batch", "both"], default="both")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cost_scaling.json"))
    a = ap.parse_args()
    methods = [m for m in a.methods.split(",") if m]
    out = Path(a.out)
    report = json.loads(out.read_text()) if out.exists() else {}
    report.update({"machine": machine(), "methods": methods, "fixed": {"image_size": 16, "layers": 5, "in": 3}})
    sweeps = {
        "channels": ("channels", [int(c) for c in a.channels.split(",")], {"batch_size": 32}),
        "batch": ("batch_size", [int(b) for b in a.batches.split(",")], {"channels": 8}),
    }
    for sweep, (key, values, fixed) in sweeps.items():
        if a.sweep not in (sweep, "both"):
            continue
        rows = {}
        skipped = {}
        for v in values:
            r = run_bench(
                methods,
                rounds=a.rounds,
                log=lambda line, k=key, v=v: print(f"{k}={v} {line}", file=sys.stderr, flush=True),
                space="darts",
                layers=5,
                image_size=16,
                in_channels=3,
                steps=a.steps,
                warmup=a.warmup,
                device=a.device,
                **{key: v},
                **fixed,
            )
            skipped.update(r["skipped"])
            for m, res in r["results"].items():
                rows.setdefault(m, []).append(
                    {
                        key: v,
                        "median_s": res["median_s"],
                        "peak_mb": res["peak_mb"],
                        "step_mb": res["step_mb"],
                        "arch_s": res.get("arch_s"),
                        "weight_s": res.get("weight_s"),
                        "saved_mb": res.get("saved_mb"),
                        "time_vs_darts": res["time_vs_darts"],
                        "step_memory_vs_darts": res["step_memory_vs_darts"],
                    }
                )
        for m, rs in rows.items():
            xs = [r[key] for r in rs]
            rows[m] = {
                "points": rs,
                "time_growth": slope(xs, [r["median_s"] for r in rs]),
                "step_memory_growth": slope(xs, [r["step_mb"] for r in rs]),
                "saved_growth": slope(xs, [r["saved_mb"] or 0 for r in rs]),
            }
        report[sweep] = {"varies": key, "fixed": fixed, "results": rows, "skipped": skipped}
        print(f"== {key} (fixed {fixed}) ==")
        for m, r in rows.items():
            pts = "  ".join(f"{p[key]}: {p['median_s']:.3f}s {p['step_mb']:.0f}MB" for p in r["points"])
            tg, mg = r["time_growth"], r["step_memory_growth"]
            print(f"{m:10s} {pts}  | growth time {tg:.2f} memory {mg:.2f}" if tg and mg else f"{m:10s} {pts}")
        for m, why in skipped.items():
            print(f"{m:10s} skipped: {why}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
