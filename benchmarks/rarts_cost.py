"""Cost of RARTS (and MiLeNAS) against first-order DARTS: a configuration of `diffnas bench`.

The proxy scale (C=8, 5 cells, batch 64, 16x16 one-channel inputs, 10 classes,
`search.epochs=4`), DARTS space, CPU, one thread: each method in a fresh process, methods
alternating round by round; the step time and its phases, the tensors saved for backward,
peak and step memory, and ``train_state_mb``: every network's parameters and every
optimizer's state (RARTS keeps two supernets and their momentum buffers; the figure this
harness used to compute by hand). Ratios to darts.

RARTS's step frame puts only its optimizer updates in the phases (w and y updates: weight,
alpha update: arch); its forward and backward passes (three or four per step) are ``other``.

    flock /tmp/diffnas-heavy.lock python benchmarks/rarts_cost.py --rounds 4 --steps 3      [--tiny: a check]

is

    diffnas bench --methods darts,rarts,milenas --space darts --channels 8 --layers 5 --batch-size 64 \
        --image-size 16 --in-channels 1 --rounds 4 --steps 3 --warmup 1 --set search.epochs=4

and writes benchmarks/results/rarts_cost.json.
"""

from __future__ import annotations

from proxy import BENCH_PROXY, bench, bench_args, write

METHODS = ["darts", "rarts", "milenas"]
SETS = {"search": {"epochs": 4}}


def main() -> None:
    args = bench_args(__doc__, METHODS, rounds=5, steps=4).parse_args()
    report = bench(args, BENCH_PROXY, SETS, space="darts")
    report["command"] = "flock /tmp/diffnas-heavy.lock python benchmarks/rarts_cost.py"
    write(args, "rarts_cost.json", report)


if __name__ == "__main__":
    main()
