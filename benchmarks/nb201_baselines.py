"""Search methods against the random-search baselines on a space with a benchmark table, 3 seeds each.

Proxy scale (fits a 2-core CPU machine; minutes per run): 2000 training images at 16x16
(``--subset``, ``--image-size``), search 4 epochs, C = 8, batch 64, the space's default
depth; ``rsws`` ranks 20 architectures on 2 val batches (``rsws.samples``,
``rsws.eval_batches``); the methods' own epoch counts scaled to the 4 epochs (``PROXY_METHODS``:
pc-darts and idarts free alpha after 1 epoch, not 15; darts-cd warms up 2 epochs, not 10).
BN statistics are re-estimated on 10 batches before each val evaluation (``search.bn_batches``,
as the quick preset): after 60 steps the running statistics of single-path supernets (nasp,
max-alpha) lag so far that their val accuracy reads as chance. No gradient method's
architecture changes with it; rsws's does (its ranking runs in eval mode on the running
statistics, which the next epoch inherits).
``--scale full`` drops all of these: each method's own settings.
Each run is one ``python -m diffnas search`` (no retraining: with a table the found
architecture's true accuracy is a look-up) under the shared heavy-job lock.

Reported per method and seed: the found architecture, its look-up metrics when a table is
given (``--benchmark``; a table of every NAS-Bench-201 cell comes from ``diffnas
benchmark-convert``), the count of skip connections in it (all cells), the search time, the
supernet's val accuracy (none for ``random``); per method the median and range of each.

    python benchmarks/nb201_baselines.py --data-dir DATA --benchmark nb201.csv       # nb201, cifar10
    python benchmarks/nb201_baselines.py --dataset imagefolder --data-dir DIR        # DIR/{train,test}/<class>/
    python benchmarks/nb201_baselines.py --space darts --dataset fashion-mnist --tiny  # checks the script

writes benchmarks/results/nb201_baselines.json (run directories under runs/nb201_baselines/; --tiny and
--scale full under runs/nb201_baselines-tiny/ and -full/: a run directory with a summary is reused).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

from proxy import LOCK, ROOT
from proxy import env as proxy_env

PROXY = [
    "--subset", "2000", "--image-size", "16",
    "--set", "search.epochs=4", "--set", "search.channels=8", "--set", "search.batch_size=64",
    "--set", "search.bn_batches=10",
]  # fmt: skip
# per method: its own options, and its own epoch counts scaled from its paper's 50 (DARTS-CD: 25) epochs to these 4,
# so that every method takes architecture steps after its freeze or warm-up
PROXY_METHODS = {
    "rsws": ["rsws.samples=20", "rsws.eval_batches=2"],
    "pc-darts": ["search.arch_start_epoch=1"],  # alpha frozen 15 of 50 epochs
    "idarts": ["search.arch_start_epoch=1"],  # (backtracking from epoch 25 of 50 never starts at this scale)
    "darts-cd": ["darts-cd.warmup_epochs=2"],  # warm-up 10 of 25 epochs
}
TINY = [
    "--subset", "200", "--image-size", "8",
    "--set", "search.epochs=1", "--set", "search.channels=4", "--set", "search.batch_size=16",
    "--set", "search.bn_batches=2",
]  # fmt: skip
TINY_METHODS = {"rsws": ["rsws.samples=3"]}


def search_args(method: str, scale: dict) -> list[str]:
    """The scale's flags for ``method``: the shared ones and its own."""
    return [*scale["flags"], *(x for item in scale["methods"].get(method, []) for x in ("--set", item))]


def one_run(method: str, seed: int, out: Path, args, scale: dict) -> dict:
    error = None
    if not (out / "summary.json").is_file():
        cmd = [sys.executable, "-m", "diffnas", "search", "--method", method, "--space", args.space]
        cmd += ["--dataset", args.dataset, *search_args(method, scale), "--seed", str(seed)]
        cmd += ["--out", str(out), "--no-progress"]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        if args.benchmark:
            cmd += ["--benchmark", str(Path(args.benchmark).resolve())]
        for item in args.set:
            cmd += ["--set", item]
        locked = ["flock", LOCK] if not args.no_lock else []
        proc = subprocess.run([*locked, *cmd], cwd=ROOT, env=proxy_env(), capture_output=True, text=True)
        if proc.returncode:
            error = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"{method} seed {seed}: {error}", file=sys.stderr)
            if not (out / "summary.json").is_file():  # a found architecture the table lacks still has its run
                return {"seed": seed, "error": error}
    summary = json.loads((out / "summary.json").read_text())
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    architecture = metrics[-1]["genotype"]
    val_acc = summary.get("val_acc")
    run = {
        "seed": seed,
        "architecture": architecture,
        "lookup": summary.get("lookup"),
        "skips": architecture.count("skip_connect"),
        "search_seconds": summary["seconds"],
        # the supernet on the search's val split (without a table, the only accuracy there is); NaN for random
        "val_acc": val_acc if isinstance(val_acc, float) and math.isfinite(val_acc) else None,
        **({"warning": error} if error else {}),
    }
    if args.benchmark:  # the search path in true accuracy, epoch by epoch
        run["lookup_path"] = [{k: v for k, v in m.items() if k.startswith("lookup_")} for m in metrics]
    return run


def stat(values: list) -> dict | None:
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="random,rsws,darts", help="comma-separated search methods")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--space", default="nb201")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--data-dir")
    ap.add_argument("--benchmark", help="benchmark table (CSV) to look the found architectures up in")
    ap.add_argument("--scale", choices=("proxy", "full"), default="proxy")
    ap.add_argument("--tiny", action="store_true", help="200 images at 8x8, 1 epoch, C=4: checks the script")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config for every run")
    ap.add_argument("--no-lock", action="store_true", help="do not take the shared heavy-job lock")
    ap.add_argument("--runs", help="run directories here (default runs/nb201_baselines, -tiny or -full by scale)")
    ap.add_argument("--out", help="JSON file (default benchmarks/results/nb201_baselines.json; none with --tiny)")
    args = ap.parse_args()
    flags, own = (TINY, TINY_METHODS) if args.tiny else (PROXY, PROXY_METHODS) if args.scale == "proxy" else ([], {})
    scale = {"flags": flags, "methods": own}
    seeds = [int(s) for s in args.seeds.split(",")]
    # a run directory with a summary is reused, so each scale keeps its own
    suffix = "-tiny" if args.tiny else "-full" if args.scale == "full" else ""
    runs_dir = Path(args.runs or ROOT / "runs" / f"nb201_baselines{suffix}")
    report: dict = {"space": args.space, "dataset": args.dataset, "scale": {**scale, "set": args.set}}
    report["benchmark"] = args.benchmark
    report["methods"] = {}
    for method in args.methods.split(","):
        runs = [one_run(method, s, runs_dir / f"{args.space}-{method}-s{s}", args, scale) for s in seeds]
        ok = [r for r in runs if "error" not in r]
        first = next((list(r["lookup"]) for r in ok if r.get("lookup")), [None])[0]
        report["methods"][method] = {
            "runs": runs,
            "lookup_metric": first,
            "lookup": stat([(r.get("lookup") or {}).get(first) for r in ok]),
            "skips": stat([r["skips"] for r in ok]),
            "search_seconds": stat([r["search_seconds"] for r in ok]),
            "val_acc": stat([r["val_acc"] for r in ok]),
        }
        row = report["methods"][method]
        look = row["lookup"]
        print(
            f"{method:10s} {len(ok)}/{len(runs)} ok | "
            f"{first or 'lookup'} {look['median'] if look else '-'} | skips {row['skips']} | "
            f"val acc {row['val_acc']['median'] if row['val_acc'] else '-'} | "
            f"search s {row['search_seconds']['median'] if row['search_seconds'] else '-'}"
        )
    out = args.out or (None if args.tiny else ROOT / "benchmarks" / "results" / "nb201_baselines.json")
    if out:
        Path(out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
