"""The paper's Figure 3 from a run's files: FIMT, its threshold and the architecture steps.

    python benchmarks/fimt_figure3.py RUN/search [--epoch 0] [--out fig.png]

Reads ``steps.jsonl`` of a search with the `fimt` schedule (e.g. `--method darts-prime`)
and draws, for one epoch (all epochs with ``--epoch -1``), the moving average of the
Fisher trace (``fimt``), the adaptive threshold (``fimt_threshold``) on a log scale, and
a tick at every step that made an architecture step (``arch_step``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a search run directory (with steps.jsonl)")
    ap.add_argument("--epoch", type=int, default=0, help="-1: all epochs")
    ap.add_argument("--out", help="image path (default RUN/fimt_figure3.png)")
    args = ap.parse_args()
    run = Path(args.run)
    steps = [json.loads(x) for x in (run / "steps.jsonl").read_text().splitlines() if x.strip()]
    steps = [s for s in steps if "fimt_threshold" in s and (args.epoch < 0 or s["epoch"] == args.epoch)]
    if not steps:
        raise SystemExit(f"{run}/steps.jsonl has no FIMT records for epoch {args.epoch}")
    x = list(range(len(steps)))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([i for i, s in zip(x, steps) if s["fimt"] is not None], [s["fimt"] for s in steps if s["fimt"] is not None],
            label="FIMT (moving average)")  # fmt: skip
    ax.plot(x, [s["fimt_threshold"] for s in steps], label="threshold h", linestyle="--")
    for i, s in zip(x, steps):
        if s["arch_step"]:
            ax.axvline(i, color="tab:red", alpha=0.3, linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("weight step" + ("" if args.epoch < 0 else f" (epoch {args.epoch})"))
    n = sum(s["arch_step"] for s in steps)
    ax.set_title(f"{n} architecture steps (red) in {len(steps)} weight steps")
    ax.legend()
    fig.tight_layout()
    out = Path(args.out) if args.out else run / "fimt_figure3.png"
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main()
