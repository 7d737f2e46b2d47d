"""Search-step cost of NASP against DARTS (first and second order): a configuration of `diffnas bench`.

The proxy scale (C=8, 5 cells, batch 64, 16x16 one-channel inputs, 10 classes,
`search.epochs=4`), on each of ``--spaces`` (`darts-nonone` and `nasp12`): darts, darts2,
nasp (its architecture step computes all ops, as the authors' code does) and
``nasp[nasp.arch_ops=selected]`` (only the selected ops). Per space one bench run: each
method in a fresh process, methods alternating round by round; the step time and its
architecture and weight phases (which this harness used to time by calling ``arch_step``
and ``weight_step`` itself), the tensors saved for backward per phase, peak and step memory;
ratios to darts on the same space.

    flock /tmp/diffnas-heavy.lock python benchmarks/nasp_cost.py           [--tiny: a seconds-long check]

is, per space,

    diffnas bench --methods 'darts,darts2,nasp,nasp[nasp.arch_ops=selected]' --space SPACE --channels 8 \
        --layers 5 --batch-size 64 --image-size 16 --in-channels 1 --rounds 3 --steps 4 --warmup 1 \
        --set search.epochs=4

and writes benchmarks/results/nasp_cost.json (``spaces``: one bench report per space; a run for some
spaces keeps the others' reports).
"""

from __future__ import annotations

import json
from pathlib import Path

from proxy import BENCH_PROXY, ROOT, bench, bench_args, write

METHODS = ["darts", "darts2", "nasp", "nasp[nasp.arch_ops=selected]"]
SPACES = ["darts-nonone", "nasp12"]
SETS = {"search": {"epochs": 4}}


def main() -> None:
    ap = bench_args(__doc__, METHODS, rounds=3, steps=4)
    ap.add_argument("--spaces", nargs="+", default=SPACES)
    args = ap.parse_args()
    reports = {space: bench(args, BENCH_PROXY, SETS, log_prefix=f"{space} ", space=space) for space in args.spaces}
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "nasp_cost.json"
    previous = json.loads(out.read_text()) if out.is_file() and not args.tiny else {}
    result = {
        "what": "diffnas bench per space: step time, arch/weight phases, saved for backward, memory; ratios to darts",
        "command": "flock /tmp/diffnas-heavy.lock python benchmarks/nasp_cost.py",
        "spaces": {**previous.get("spaces", {}), **reports},
    }
    write(args, "nasp_cost.json", result, tables=reports)


if __name__ == "__main__":
    main()
