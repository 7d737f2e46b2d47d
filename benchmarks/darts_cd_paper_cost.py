"""DARTS-CD's cost claim at the paper's scale (issue 22): two `diffnas bench --interleave` runs, 8 and 20 cells.

B=64, 32x32 inputs with 3 channels, C=16, 10 classes, the DARTS space (with `none`),
`search.epochs=25`; each method at its steady state. Entries:

- `darts` (first order), the yardstick;
- `darts-cd`: the default reading, one relaxed edge per cell, the shared parts (stem,
  preprocessing, classifier) trained every step;
- `darts-cd[relax.sample=network,darts-cd.train_shared=false]`: the paper's cost reading,
  one relaxed edge per training step in the whole network, the shared parts trained only
  with the edge they feed;
- the paper reading with `darts-cd.recompute=false`: activations kept instead of recomputed
  (the time recomputation costs, the memory it saves), and (8 cells) with
  `darts-cd.recompute_share=1`: every frozen cell recomputed, not only the first ones
  holding 70% of the activations (the default: see `docs/methods/darts_cd.md`);
- (8 cells) `darts-cd[relax.sample=network]`: one edge per step, shared parts every step;
- `max-alpha` and `derived` (the training step of the derived network with the same cells
  and width: the floor of a single-path step);
- (20 cells) `darts[search.layers=8]`: the 8-cell yardstick again, timed in the same
  process as the 20-cell entries, for the checks that compare the two depths.

The one-edge-per-step entries time 24 steps (`NAME[steps=24,...]`): their step's cost
depends on where the edge falls (about 3x dearer in cell 0 than in cell 7, 8 cells), so a
search's time per step is the mean over many draws, not the median of two. The others
time 4 steps.

**Interleaved** (`--interleave`): each run times all its entries in one process, one step
of each in turn, the short entries' steps spread over the run. This shared 2-core machine
drifts by up to 2x over minutes (other tenants), so entries timed one after another, each in
its own process, compare different machines; taken in turn they see the same one. Step
memory still comes from a fresh process per entry (bench's memory pass).

Then the issue's checks (CPU time of the one-thread process: the mean over the timed
steps; step MB = peak minus the process before its first step, library code left out): at
8 cells the paper reading at most 0.15x darts's time and step memory, max-alpha at most
1.5x derived; a 25-epoch 20-cell search of the paper reading at most 1/4 of a 50-epoch
8-cell darts search, its step memory at most 1/3 of that darts's.

    flock /tmp/diffnas-heavy.lock python benchmarks/darts_cd_paper_cost.py       [--tiny: a seconds-long check]

is, per cell count L in 8 20,

    diffnas bench --interleave --methods "$METHODS" --space darts --channels 16 --layers L --batch-size 64 \\
        --image-size 32 --in-channels 3 --rounds 1 --steps 4 --warmup 1 --saved-steps 0 --set search.epochs=25

with METHODS the entries above, comma-separated (one thread per process), and writes
benchmarks/results/darts_cd_paper_cost.json.
"""

from __future__ import annotations

from proxy import bench, bench_args, write

# one edge per step: a step's cost depends on where the edge falls, so these entries time many steps and a
# search's time per step is their mean (the 2 steps of the other entries would be 2 draws)
DRAWS = 24
PAPER_READING = f"darts-cd[steps={DRAWS},relax.sample=network,darts-cd.train_shared=false]"
KEPT = f"darts-cd[steps={DRAWS},relax.sample=network,darts-cd.train_shared=false,darts-cd.recompute=false]"
ALL_RECOMPUTED = f"darts-cd[steps={DRAWS},relax.sample=network,darts-cd.train_shared=false,darts-cd.recompute_share=1]"
DARTS_8 = "darts[search.layers=8]"  # (in the 20-cell run: the yardstick, timed beside the 20-cell entries)
METHODS = {
    8: ["darts", "darts-cd", PAPER_READING, KEPT, ALL_RECOMPUTED, f"darts-cd[steps={DRAWS},relax.sample=network]",
        "max-alpha", "derived"],
    20: ["darts", DARTS_8, "darts-cd", PAPER_READING, KEPT, "max-alpha", "derived"],
}  # fmt: skip
SCALE = {"channels": 16, "batch_size": 64, "image_size": 32, "in_channels": 3}
SETS = {"search": {"epochs": 25}}
CELLS = (8, 20)


def checks(reports: dict, cd: str = PAPER_READING) -> dict:
    """The issue's done-when figures (None where an entry failed), each with its bound."""
    r8, r20 = reports[8]["results"], reports[20]["results"]

    def get(results, name, key):
        return (results.get(name) or {}).get(key)

    def ratio(a, b, factor=1.0):
        return None if a is None or not b else factor * a / b

    def search_s(results, name):  # CPU s per step of a search: the mean over the timed steps' draws
        return get(results, name, "cpu_mean_s") or get(results, name, "cpu_median_s")

    darts8_s, darts8_mb = search_s(r8, "darts"), get(r8, "darts", "step_mb")
    darts8_in_20_s = search_s(r20, DARTS_8)  # timed in turn with the 20-cell entries
    derived8_s, derived20_s = get(r8, "derived", "cpu_median_s"), get(r20, "derived", "cpu_median_s")
    out = {
        "cd_8_time_vs_darts_8": (ratio(search_s(r8, cd), darts8_s), 0.15),
        "cd_8_step_mb_vs_darts_8": (ratio(get(r8, cd, "step_mb"), darts8_mb), 0.15),
        "default_8_time_vs_darts_8": (ratio(get(r8, "darts-cd", "cpu_median_s"), darts8_s), None),
        "default_8_step_mb_vs_darts_8": (ratio(get(r8, "darts-cd", "step_mb"), darts8_mb), None),
        "max_alpha_8_time_vs_derived_8": (ratio(get(r8, "max-alpha", "cpu_median_s"), derived8_s), 1.5),
        # a search's time: epochs x steps per epoch (the same data) x step time
        "cd_20_25ep_search_vs_darts_8_50ep": (ratio(search_s(r20, cd), darts8_in_20_s, 25 / 50), 0.25),
        "cd_20_step_mb_vs_darts_8": (ratio(get(r20, cd, "step_mb"), darts8_mb), 1 / 3),
        "default_20_25ep_search_vs_darts_8_50ep": (
            ratio(get(r20, "darts-cd", "cpu_median_s"), darts8_in_20_s, 25 / 50), None),
        "default_20_step_mb_vs_darts_8": (ratio(get(r20, "darts-cd", "step_mb"), darts8_mb), None),
        "max_alpha_20_time_vs_derived_20": (ratio(get(r20, "max-alpha", "cpu_median_s"), derived20_s), 1.5),
    }  # fmt: skip
    return {k: {"value": v, "at_most": bound, "met": None if v is None or bound is None else v <= bound}
            for k, (v, bound) in out.items()}  # fmt: skip


def main() -> None:
    args = bench_args(__doc__, [], rounds=1, steps=4).parse_args()
    given, reports = args.methods, {}
    for cells in CELLS:
        layers = 3 if args.tiny else cells
        args.methods = given or ",".join(METHODS[cells])
        reports[cells] = bench(
            args, {**SCALE, "layers": layers}, SETS, log_prefix=f"[{cells} cells] ", space="darts", interleave=True,
            saved_steps=0,
        )  # fmt: skip
    result = {
        "command": "flock /tmp/diffnas-heavy.lock python benchmarks/darts_cd_paper_cost.py",
        "interleaved": True,
        "reports": {str(c): r for c, r in reports.items()},
        "checks": checks(reports),
    }
    write(args, "darts_cd_paper_cost.json", result, tables={f"{c} cells": r for c, r in reports.items()})
    for name, c in result["checks"].items():
        value = "-" if c["value"] is None else f"{c['value']:.3f}"
        bound = (
            ""
            if c["at_most"] is None or c["value"] is None
            else f" (at most {c['at_most']:.3f}: {'met' if c['met'] else 'NOT met'})"
        )
        print(f"{name:40s} {value}{bound}")


if __name__ == "__main__":
    main()
