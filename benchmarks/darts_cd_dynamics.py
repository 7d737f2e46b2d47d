"""DARTS-CD's architecture-parameter dynamics (the paper's Figure 4), read back from run files.

Three searches on the Fashion-MNIST proxy (``--subset 2000 --image-size 16``, C=8, 5
cells, batch 64): ``max-alpha``, ``darts-cd`` without warm-up and ``darts-cd`` with
warm-up (``--warmup`` epochs, even, so the alphas end in their original orientation).
From each run's ``metrics.jsonl`` (per epoch: ``alphas``, ``alpha_sign``, ``max_alpha``)
and ``steps.jsonl`` (per step: ``relaxed``) it counts, per edge and epoch, how often the
max-alpha op changed and how many op pairs swapped rank (Kendall distance between
consecutive epochs), both on the sign-corrected alphas (``alpha_sign * alphas``, the
paper's Figure 4 j-l) and, for the max-alpha op, on the alphas the network runs with;
and how often each edge was relaxed. Draws Figure 4 (softmax of the sign-corrected
alphas of three normal edges over the epochs) to ``darts_cd_dynamics.png``.

    flock /tmp/diffnas-heavy.lock python benchmarks/darts_cd_dynamics.py --only max-alpha
    flock /tmp/diffnas-heavy.lock python benchmarks/darts_cd_dynamics.py --only darts-cd
    flock /tmp/diffnas-heavy.lock python benchmarks/darts_cd_dynamics.py --only darts-cd-warmup
    python benchmarks/darts_cd_dynamics.py   # analysis only once the three runs exist

writes benchmarks/results/darts_cd_dynamics.json (runs under runs/darts_cd_dynamics/).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

SCALE = {"channels": 8, "layers": 5, "batch_size": 64}
EDGES_DRAWN = (1, 6, 12)


def variants(warmup: int) -> dict:
    return {
        "max-alpha": ("max-alpha", {"warmup_epochs": 0}),
        "darts-cd": ("darts-cd", {"warmup_epochs": 0}),
        "darts-cd-warmup": ("darts-cd", {"warmup_epochs": warmup}),
    }


def run_search(name: str, args) -> None:
    import diffnas

    method, extra = variants(args.warmup)[name]
    diffnas.search(
        method=method,
        subset=2000,
        image_size=16,
        seed=args.seed,
        progress=False,
        search={**SCALE, "epochs": args.epochs, **extra},
        out=args.runs / name,
    )


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def kendall(a: list[float], b: list[float]) -> int:
    return sum((a[i] - a[j]) * (b[i] - b[j]) < 0 for i, j in combinations(range(len(a)), 2))


def argmax(v: list[float]) -> int:
    return max(range(len(v)), key=v.__getitem__)


def analyze(run: Path) -> dict:
    metrics = lines(run / "metrics.jsonl")
    steps = lines(run / "steps.jsonl")
    warm = [r.get("warmup", False) for r in metrics]
    out: dict = {"epochs": len(metrics), "warmup_epochs": sum(warm), "final_val_acc": metrics[-1]["val_acc"]}
    corrected = [
        {t: [[r["alpha_sign"] * a for a in row] for row in r["alphas"][t]] for t in r["alphas"]} for r in metrics
    ]
    transitions = {"warmup": 0, "after": 0}
    for e in range(1, len(metrics)):
        transitions["warmup" if warm[e - 1] else "after"] += 1
    out["epoch_transitions"] = transitions
    for t in ("normal", "reduce"):
        edges = len(corrected[0][t])
        counts = {k: {"warmup": 0, "after": 0} for k in ("max_op_changes", "max_op_changes_as_run", "rank_swaps")}
        for e in range(1, len(metrics)):
            phase = "warmup" if warm[e - 1] else "after"
            for k in range(edges):
                prev, cur = corrected[e - 1][t][k], corrected[e][t][k]
                counts["max_op_changes"][phase] += argmax(prev) != argmax(cur)
                counts["rank_swaps"][phase] += kendall(prev, cur)
                counts["max_op_changes_as_run"][phase] += (
                    metrics[e - 1]["max_alpha"][t][k] != metrics[e]["max_alpha"][t][k]
                )
        # per edge and epoch transition
        out[t] = {
            k: {ph: round(c / (edges * transitions[ph]), 3) if transitions[ph] else None for ph, c in v.items()}
            for k, v in counts.items()
        }
    relaxed = [s["relaxed"] for s in steps if "relaxed" in s]
    if relaxed and isinstance(relaxed[0], list):
        counts = [0] * len(corrected[0]["normal"])
        for r in relaxed:
            for cell in r:
                for e in cell:
                    counts[e] += 1
        out["times_relaxed_per_edge"] = counts
    out["genotype"] = metrics[-1]["genotype"]
    out["_corrected"] = corrected
    out["_ops"] = metrics[0]["ops"]
    return out


def draw(results: dict, path: Path) -> None:
    import math

    from matplotlib.figure import Figure

    names = list(results)
    fig = Figure(figsize=(4 * len(EDGES_DRAWN), 3 * len(names)))
    axes = fig.subplots(len(names), len(EDGES_DRAWN), squeeze=False)
    for i, name in enumerate(names):
        res = results[name]
        ops = res["_ops"]["normal"]
        for j, edge in enumerate(EDGES_DRAWN):
            ax = axes[i][j]
            series = []
            for rec in res["_corrected"]:
                row = rec["normal"][edge]
                z = sum(math.exp(a) for a in row)
                series.append([math.exp(a) / z for a in row])
            for o, op in enumerate(ops):
                ax.plot(range(len(series)), [s[o] for s in series], label=op)
            if res["warmup_epochs"]:
                ax.axvspan(-0.5, res["warmup_epochs"] - 0.5, color="0.9")
            ax.set_title(f"{name}: normal edge {edge}", fontsize=9)
            ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=list(variants(0)), help="run this search (if missing), then analyze")
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--warmup", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=Path, default=ROOT / "runs/darts_cd_dynamics")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/darts_cd_dynamics.json")
    args = p.parse_args()
    if args.only and not (args.runs / args.only / "summary.json").is_file():
        t0 = time.time()
        run_search(args.only, args)
        print(f"{args.only}: searched in {time.time() - t0:.0f} s", file=sys.stderr)
    results = {n: analyze(args.runs / n) for n in variants(0) if (args.runs / n / "summary.json").is_file()}
    if not results:
        raise SystemExit("no run yet: start with --only NAME")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw(results, args.out.with_suffix(".png"))
    public = {n: {k: v for k, v in r.items() if not k.startswith("_")} for n, r in results.items()}
    args.out.write_text(
        json.dumps(
            {
                "what": "changes of the max-alpha op and op-rank swaps between consecutive epochs (Figure 4)",
                "config": {"subset": 2000, "image_size": 16, **SCALE, "epochs": args.epochs, "seed": args.seed},
                "warmup": args.warmup,
                "results": public,
            },
            indent=1,
        )
        + "\n"
    )
    print(json.dumps(public, indent=1))


if __name__ == "__main__":
    main()
