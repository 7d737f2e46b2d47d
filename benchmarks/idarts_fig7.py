"""The IDARTS paper's Figure 7 from two search runs: alpha of one edge per epoch, per op.

    python benchmarks/idarts_fig7.py RUN_IDARTS RUN_PCDARTS [--edge 0] [--cell normal] [--out fig7.png]

RUN_* are search run directories (or ``run`` directories holding ``search/``); the raw
alphas come from their ``metrics.jsonl``. Epochs where IDARTS backtracked this edge are
marked on its panel. Default edge 0 of the normal cell, the shallowest edge.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def metrics(run: Path) -> list:
    path = run / "metrics.jsonl" if (run / "metrics.jsonl").is_file() else run / "search" / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("idarts", type=Path)
    ap.add_argument("pcdarts", type=Path)
    ap.add_argument("--edge", type=int, default=0)
    ap.add_argument("--cell", default="normal")
    ap.add_argument("--out", type=Path, default=Path("fig7.png"))
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (label, run) in zip(axes, (("IDARTS", args.idarts), ("PC-DARTS", args.pcdarts))):
        recs = metrics(run)
        ops = recs[-1]["ops"][args.cell]
        epochs = [r["epoch"] for r in recs]
        for o, op in enumerate(ops):
            ax.plot(epochs, [r["alphas"][args.cell][args.edge][o] for r in recs], label=op)
        marked = [r["epoch"] for r in recs if args.edge in (r.get("backtracked_edges") or {}).get(args.cell, [])]
        for e in marked:
            ax.axvline(e, color="grey", alpha=0.3, lw=4)
        ax.set_title(f"{label}: alpha, {args.cell} edge {args.edge}" + (" (grey: backtracked)" if marked else ""))
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("alpha")
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
