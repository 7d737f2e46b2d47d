"""NASP's model-size regularizer (eq. 8): a larger eta must give a smaller derived network.

Searches Fashion-MNIST at the proxy scale (2000 images at 16x16; search 4 epochs, C=8,
5 cells, batch 64) with ``reg.size = eta`` for each eta and seed, then counts the
parameters of the derived network at the retraining scale (C=16, 6 cells, no auxiliary
head) and of the ops chosen in the normal cells (at the search width). No retraining:
the size is what the regularizer controls.

    flock /tmp/diffnas-heavy.lock python benchmarks/nasp_size_sweep.py --seeds 0
    flock /tmp/diffnas-heavy.lock python benchmarks/nasp_size_sweep.py --seeds 1

(one seed per call keeps each locked command under 10 minutes) writes or updates
benchmarks/results/nasp_size_sweep.json; run directories go to runs/nasp_size_sweep/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEARCH = {"epochs": 4, "channels": 8, "layers": 5, "batch_size": 64}
TRAIN = {"channels": 16, "layers": 6}


def one(space: str, eta: float, seed: int, out: Path) -> dict:
    import diffnas
    from diffnas.spaces import DerivedNetwork, get_space

    t0 = time.time()
    s = diffnas.search(
        method="nasp",
        space=space,
        dataset="fashion-mnist",
        subset=2000,
        image_size=16,
        seed=seed,
        search=SEARCH,
        reg={"size": eta} if eta else {},
        out=out,
        progress=False,
    )
    g = s.genotype
    net = DerivedNetwork(g, TRAIN["channels"], TRAIN["layers"], num_classes=10, in_channels=1)
    normal_ops = [op for op, _ in g.cells["normal"]]
    return {
        "space": space,
        "eta": eta,
        "seed": seed,
        "derived_params_m": sum(p.numel() for p in net.parameters()) / 1e6,
        "normal_cell_op_params": sum(get_space(space).op_params(op, SEARCH["channels"]) for op in normal_ops),
        "normal_ops": normal_ops,
        "reduce_ops": [op for op, _ in g.cells["reduce"]],
        "val_acc_supernet": s.val_acc,
        "search_seconds": round(time.time() - t0, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="nasp12")
    p.add_argument("--etas", nargs="+", type=float, default=[0.0, 0.01, 0.1, 1.0, 10.0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/nasp_size_sweep.json"))
    p.add_argument("--runs", default=str(ROOT / "runs/nasp_size_sweep"))
    args = p.parse_args()

    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    rows = {(r["space"], r["eta"], r["seed"]): r for r in previous.get("runs", [])}
    for seed in args.seeds:
        for eta in args.etas:
            r = one(args.space, eta, seed, Path(args.runs) / args.space / f"eta{eta:g}_seed{seed}")
            rows[(r["space"], eta, seed)] = r
            print(json.dumps(r), flush=True)
            write(out, rows)  # after every search: a killed sweep keeps what it finished


def write(out: Path, rows: dict) -> None:
    summary: dict = {}
    for space in sorted({k[0] for k in rows}):
        by_eta: dict = {}
        for (sp, eta, _), r in sorted(rows.items()):
            if sp == space:
                by_eta.setdefault(eta, []).append(r)
        summary[space] = {
            f"{eta:g}": {
                "seeds": [r["seed"] for r in rs],
                "median_derived_params_m": statistics.median(r["derived_params_m"] for r in rs),
                "median_normal_cell_op_params": statistics.median(r["normal_cell_op_params"] for r in rs),
                "median_val_acc_supernet": statistics.median(r["val_acc_supernet"] for r in rs),
            }
            for eta, rs in sorted(by_eta.items())
        }
    result = {
        "what": "NASP size regularizer sweep: params of the derived network (C=16, 6 cells) per eta",
        "command": "flock /tmp/diffnas-heavy.lock python benchmarks/nasp_size_sweep.py --seeds S",
        "search": {**SEARCH, "subset": 2000, "image_size": 16, "dataset": "fashion-mnist"},
        "derived": {**TRAIN, "auxiliary": False, "classes": 10},
        "summary": summary,
        "runs": sorted(rows.values(), key=lambda r: (r["space"], r["eta"], r["seed"])),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
