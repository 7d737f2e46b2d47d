"""NASP against the two proximal baselines of its section 4.3 (the paper's Figure 5), at proxy scale.

Searches Fashion-MNIST (2000 images at 16x16; 4 epochs, C=8, 5 cells, batch 64) on the
7-op space with ``search.nasp_update`` = nasp (Algorithm 2), proximal (eq. 10) and lazy
(eq. 11), and records per epoch the val accuracy of the discrete supernet and how many
edges changed their op during the epoch.

    flock /tmp/diffnas-heavy.lock python benchmarks/nasp_updates.py --seeds 0

writes or updates benchmarks/results/nasp_updates.json; run directories go to runs/nasp_updates/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEARCH = {"epochs": 4, "channels": 8, "layers": 5, "batch_size": 64}


def one(space: str, update: str, seed: int, out: Path) -> dict:
    import diffnas

    t0 = time.time()
    s = diffnas.search(
        method="nasp",
        space=space,
        dataset="fashion-mnist",
        subset=2000,
        image_size=16,
        seed=seed,
        search={**SEARCH, "nasp_update": update},
        out=out,
        progress=False,
    )
    steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    changed = [sum(r.get("changed_edges", 0) for r in steps if r["epoch"] == e) for e in range(SEARCH["epochs"])]
    alphas = [v for rows in metrics[-1]["alphas"].values() for row in rows for v in row]
    return {
        "space": space,
        "update": update,
        "seed": seed,
        "val_acc_per_epoch": [r["val_acc"] for r in metrics],
        "changed_edges_per_epoch": changed,
        "final_alpha_range": [min(alphas), max(alphas)],
        "genotype": str(s.genotype),
        "search_seconds": round(time.time() - t0, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="darts-nonone")
    p.add_argument("--updates", nargs="+", default=["nasp", "proximal", "lazy"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/nasp_updates.json"))
    p.add_argument("--runs", default=str(ROOT / "runs/nasp_updates"))
    args = p.parse_args()

    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    rows = {(r["space"], r["update"], r["seed"]): r for r in previous.get("runs", [])}
    for seed in args.seeds:
        for update in args.updates:
            r = one(args.space, update, seed, Path(args.runs) / args.space / f"{update}_seed{seed}")
            rows[(r["space"], update, seed)] = r
            print(json.dumps(r), flush=True)
            write(out, rows)  # after every search: a killed run keeps what it finished


def write(out: Path, rows: dict) -> None:
    result = {
        "what": "NASP vs standard (eq. 10) and lazy (eq. 11) proximal steps: discrete-supernet val acc per epoch",
        "command": "flock /tmp/diffnas-heavy.lock python benchmarks/nasp_updates.py --seeds S",
        "search": {**SEARCH, "subset": 2000, "image_size": 16, "dataset": "fashion-mnist"},
        "runs": sorted(rows.values(), key=lambda r: (r["space"], r["update"], r["seed"])),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
