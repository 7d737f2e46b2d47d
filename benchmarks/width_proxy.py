"""RARTS width search at a CPU proxy scale: rarts scores vs Network Slimming vs random pruning, same fine-tuning.

ResNet-20 (bottleneck, width x0.5) on an image folder (the CIFAR-10 JPEG folder in ../shared/data), a subset,
small images; per seed: a rarts search and a slimming search of the same length, a random 40 % pruning; each
widths file fine-tuned for the same epochs with the Network Slimming step schedule, inheriting the kept
channels' weights (random: from the rarts run of the same seed, so only the choice of channels differs).
Writes one JSON line per run to OUT/results.jsonl and a table to stdout.

    python benchmarks/width_proxy.py DATA_DIR OUT [--seeds 0,1] [--search-epochs 3] [--train-epochs 5]
        [--search-set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from diffnas.cli import main


def run(argv: list[str]) -> None:
    if main(argv) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}")


def proxy(data_dir, out, seeds, search_epochs, train_epochs, subset, image_size, multiplier, search_sets=()):
    out = Path(out)
    common = [
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(data_dir),
        "--subset",
        str(subset),
        "--image-size",
        str(image_size),
        "--no-progress",
        "--set",
        f"width.multiplier={multiplier}",
    ]
    rows = []
    for seed in seeds:
        s = ["--seed", str(seed), *common]
        for method in ("rarts", "slimming", "random"):
            d = out / f"search-{method}-{seed}"
            if not (d / "summary.json").is_file():
                run(
                    [
                        "search",
                        "--space",
                        "resnet20-width",
                        "--method",
                        method,
                        "--out",
                        str(d),
                        "--set",
                        f"search.epochs={search_epochs}",
                        *[a for kv in search_sets for a in ("--set", kv)],
                        *s,
                    ]
                )
        for method, inherit in (("rarts", "rarts"), ("slimming", "slimming"), ("random", "rarts")):
            d = out / f"train-{method}-{seed}"
            if not (d / "result.json").is_file():
                run(
                    [
                        "train",
                        "--widths",
                        str(out / f"search-{method}-{seed}" / "genotype.json"),
                        "--out",
                        str(d),
                        "--set",
                        f"train.epochs={train_epochs}",
                        "--set",
                        f"train.inherit={out / f'search-{inherit}-{seed}'}",
                        *s,
                    ]
                )
            r = json.loads((d / "result.json").read_text())
            row = {
                "method": method,
                "seed": seed,
                **{k: r[k] for k in ("test_acc", "params_m", "flops_m", "pruned_ratio")},
            }
            rows.append(row)
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
    print("| pruning | seeds | test acc (mean) | params M | FLOPs M | pruned channels |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method in ("rarts", "slimming", "random"):
        rs = [r for r in rows if r["method"] == method]
        accs = ", ".join(f"{r['test_acc']:.4f}" for r in rs)
        print(
            f"| {method} | {accs} | {statistics.mean(r['test_acc'] for r in rs):.4f} | "
            f"{statistics.mean(r['params_m'] for r in rs):.4f} | {statistics.mean(r['flops_m'] for r in rs):.2f} | "
            f"{statistics.mean(r['pruned_ratio'] for r in rs):.3f} |"
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("out")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--search-epochs", type=int, default=3)
    p.add_argument("--train-epochs", type=int, default=5)
    p.add_argument("--subset", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--multiplier", type=float, default=0.5)
    p.add_argument(
        "--search-set", action="append", default=[], metavar="KEY=VALUE", help="a config key of the searches"
    )
    a = p.parse_args()
    proxy(
        a.data_dir,
        a.out,
        [int(s) for s in a.seeds.split(",")],
        a.search_epochs,
        a.train_epochs,
        a.subset,
        a.image_size,
        a.multiplier,
        a.search_set,
    )
