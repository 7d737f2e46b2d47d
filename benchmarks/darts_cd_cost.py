"""Search-step cost of DARTS-CD and max-alpha against DARTS (first order): a configuration of `diffnas bench`.

B=32, 16x16 inputs with 3 channels, C=8, 5 cells, 10 classes, the DARTS space (with
`none`), `search.epochs=25`; every other setting is the method's own. Each method is
measured in a fresh process at its steady state (DARTS-CD and max-alpha: epoch 10, past
their sign-flip warm-up; the harness this replaces measured epoch 0, inside the warm-up),
methods alternating round by round: the step time and its architecture and weight phases,
the tensors saved for backward per phase (the weight phase is one training forward: the
figure this harness used to count by hand), peak memory and step memory (peak minus the
process before its first step; on CUDA max allocated); ratios to darts.

    flock /tmp/diffnas-heavy.lock python benchmarks/darts_cd_cost.py       [--tiny: a seconds-long check]

is

    diffnas bench --methods darts,darts-cd,max-alpha --space darts --channels 8 --layers 5 \
        --batch-size 32 --image-size 16 --in-channels 3 --rounds 3 --steps 5 --warmup 1 \
        --set search.epochs=25 --out benchmarks/results/darts_cd_cost.json

(one thread per process) and writes benchmarks/results/darts_cd_cost.json.
"""

from __future__ import annotations

from proxy import bench, bench_args, write

METHODS = ["darts", "darts-cd", "max-alpha"]
SCALE = {"channels": 8, "layers": 5, "batch_size": 32, "image_size": 16, "in_channels": 3}
SETS = {"search": {"epochs": 25}}


def main() -> None:
    args = bench_args(__doc__, METHODS, rounds=3, steps=5).parse_args()
    report = bench(args, SCALE, SETS, space="darts")
    report["command"] = "flock /tmp/diffnas-heavy.lock python benchmarks/darts_cd_cost.py"
    write(args, "darts_cd_cost.json", report)


if __name__ == "__main__":
    main()
