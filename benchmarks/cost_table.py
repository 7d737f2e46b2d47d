"""The README's cost table: one search step of every method against DARTS and the reference DARTS step.

One command, one run on one machine: every method (and the reference re-implementation of
the original DARTS step, ../shared/bench/ref_darts_step.py) is measured in a fresh
subprocess, the methods alternating round by round; each figure is the median over rounds
of the median step time, and the peak RSS (CPU) or max allocated (CUDA). ``step MB`` is the
peak minus the process's memory before its first step (interpreter, PyTorch and its
lazily imported compiler stack, model, optimizers: ~300 MB on CPU for every method).

    flock /tmp/diffnas-heavy.lock python benchmarks/cost_table.py

writes benchmarks/results/cost_table.json and prints the table and its README rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from diffnas.bench import REFERENCE, format_table, run_bench  # noqa: E402

METHODS = ["darts", "darts2", "darts-cd", "max-alpha", "nasp", "pc-darts", "idarts", "rarts", "darts-prime"]
DEFAULT_REFERENCE = ROOT.parent / "shared" / "bench" / "ref_darts_step.py"


def markdown(report: dict) -> str:
    rows = ["| method | step time (s) | x darts | peak memory (MB) | x darts | step memory (MB) | x darts |"]
    rows.append("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in report["results"].items():
        label = "reference DARTS step" if name == REFERENCE else f"`{name}`"

        def f(v, spec):
            return "-" if v is None else format(v, spec)

        rows.append(
            f"| {label} | {r['median_s']:.3f} | {f(r['time_vs_darts'], '.2f')} | {r['peak_mb']:.0f} | "
            f"{f(r['memory_vs_darts'], '.2f')} | {f(r['step_mb'], '.0f')} | {f(r['step_memory_vs_darts'], '.2f')} |"
        )
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--space", default="darts")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reference", default=str(DEFAULT_REFERENCE), help="'' to leave the reference out")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cost_table.json"))
    a = ap.parse_args()
    report = run_bench(
        [m for m in a.methods.split(",") if m],
        rounds=a.rounds,
        reference=a.reference or None,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        space=a.space,
        channels=a.channels,
        layers=a.layers,
        batch_size=a.batch_size,
        image_size=a.image_size,
        in_channels=3,
        steps=a.steps,
        warmup=a.warmup,
        device=a.device,
    )
    ref, darts = report["results"].get(REFERENCE), report["results"].get("darts")
    if ref and darts:
        report["darts_vs_reference"] = {
            "time": darts["median_s"] / ref["median_s"],
            "peak_memory": darts["peak_mb"] / ref["peak_mb"],
            "step_memory": darts["step_mb"] / ref["step_mb"] if ref.get("step_mb") else None,
            # per round: the two were measured back to back
            "time_per_round": [d / r for d, r in zip(darts["rounds_median_s"], ref["rounds_median_s"])],
        }
    report["markdown"] = markdown(report)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    print(format_table(report))
    if "darts_vs_reference" in report:
        d = report["darts_vs_reference"]
        step = f"{d['step_memory']:.2f}" if d["step_memory"] is not None else "-"
        print(f"darts / reference: time {d['time']:.2f}, peak memory {d['peak_memory']:.2f}, step memory {step}")
    print()
    print(report["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
