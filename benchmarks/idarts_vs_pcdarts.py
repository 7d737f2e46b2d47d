"""IDARTS against PC-DARTS on Fashion-MNIST at the proxy scale, 3 seeds each.

Proxy scale: 2000 training images at 16x16; search 4 epochs, C=8, 5 cells, batch 64;
retraining 4 epochs, C=16, 6 cells. The paper's epoch settings are scaled from 50 to
4 epochs: architecture frozen for the first 15/50 -> 1 epoch, backtracking from
T = 25/50 -> epoch 2, and lambda = 0.015 * 50/4 = 0.1875 so that zeta grows over the
backtracking epochs as it does over the paper's: zeta(K) = floor((K - T) lambda L) is 0
at epoch 2 and 2 at epoch 3 (the paper's schedule gives 2 at epoch 37.5 of 50).
Everything else is each method's paper default (w_lr 0.1, a_lr 6e-4, ...).

One seed is one command under the shared heavy-job lock (at most ``--timeout`` s):
pc-darts is searched and retrained; each IDARTS arm is searched, and retrained only if
its genotype differs from pc-darts's at the same seed: retraining is deterministic given
the genotype and the seed (seed 0, where both were retrained, gave the same test
accuracy to the last digit), so an identical genotype reuses pc-darts's test accuracy
(``retrain`` says which). Finished runs already in the JSON are kept (rerun to complete a
cut-off series). Arms: ``pc-darts``, ``idarts`` (the defaults of docs/methods/idarts.md) and,
with ``--arms``, ``idarts-step`` (idarts_grad=step).

    python benchmarks/idarts_vs_pcdarts.py --arms pc-darts idarts idarts-step   # takes the lock per seed

writes benchmarks/results/idarts_vs_pcdarts.json (runs under runs/idarts_vs_pcdarts/).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from proxy import LOCK, PROXY, ROOT, env, lines

SCALED = ["--set", "search.arch_start_epoch=1"]
IDARTS_SCALED = ["--set", "search.idarts_start_epoch=2", "--set", "search.idarts_lambda=0.1875"]
ARMS = {
    "pc-darts": ["--method", "pc-darts", *SCALED],
    "idarts": ["--method", "idarts", *SCALED, *IDARTS_SCALED],
    "idarts-step": ["--method", "idarts", *SCALED, *IDARTS_SCALED, "--set", "search.idarts_grad=step"],
}


def run_dir(arm: str, seed: int) -> Path:
    return ROOT / "runs" / "idarts_vs_pcdarts" / f"{arm}-s{seed}"


def inner(seed: int, arms: list, budget: float) -> None:
    """One seed, inside the lock: pc-darts searched and retrained; each IDARTS arm searched, and
    retrained unless its genotype equals pc-darts's (then retraining, deterministic given genotype
    and seed, would repeat pc-darts's number) or the time budget would be exceeded."""
    t0 = time.time()
    train_s = None
    for arm in ["pc-darts"] + [a for a in arms if a != "pc-darts"]:
        out = run_dir(arm, seed)
        base = [sys.executable, "-m", "diffnas"]
        if (
            arm == "pc-darts"
            and (out / "train" / "result.json").is_file()
            and (out / "search" / "summary.json").is_file()
        ):
            train_s = json.loads((out / "train" / "result.json").read_text()).get("seconds")
            continue  # finished earlier: the reference for the other arms
        if (out / "search" / "summary.json").is_file() and (
            (out / "train" / "result.json").is_file() or (out / "reused.json").is_file()
        ):
            continue  # this arm finished earlier for this seed
        (out / "train" / "result.json").unlink(missing_ok=True)
        (out / "reused.json").unlink(missing_ok=True)
        if arm == "pc-darts":
            subprocess.run([*base, "run", *ARMS[arm], *PROXY, "--seed", str(seed), "--out", str(out), "--no-progress"],
                           cwd=ROOT, env=env(), check=True)  # fmt: skip
            train_s = json.loads((out / "train" / "result.json").read_text()).get("seconds")
            continue
        tail = ["--seed", str(seed), "--no-progress"]
        # the train.* keys are ignored by a search and the search.* keys by a retraining
        subprocess.run(
            [*base, "search", *ARMS[arm], *PROXY, *tail, "--out", str(out / "search")], cwd=ROOT, env=env(), check=True
        )
        mine = json.loads((out / "search" / "genotype.json").read_text())
        ref = json.loads((run_dir("pc-darts", seed) / "search" / "genotype.json").read_text())
        if mine == ref:
            (out / "reused.json").write_text(json.dumps({"reason": "same genotype as pc-darts, same seed"}) + "\n")
            continue
        if train_s and time.time() - t0 + 1.05 * train_s > budget:
            (out / "reused.json").write_text(json.dumps({"reason": "not retrained: time budget"}) + "\n")
            continue
        genotype = str(out / "search" / "genotype.json")
        subprocess.run(
            [*base, "train", "--genotype", genotype, *PROXY, *tail, "--out", str(out / "train")],
            cwd=ROOT,
            env=env(),
            check=True,
        )


def collect(arm: str, seed: int) -> dict | None:
    out = run_dir(arm, seed)
    if not (out / "search" / "summary.json").is_file():
        return None
    summary = json.loads((out / "search" / "summary.json").read_text())
    retrain = "retrained"
    if (out / "train" / "result.json").is_file():
        result = json.loads((out / "train" / "result.json").read_text())
    elif (out / "reused.json").is_file():
        retrain = json.loads((out / "reused.json").read_text())["reason"]
        ref = run_dir("pc-darts", seed) / "train" / "result.json"
        same = retrain.startswith("same genotype") and ref.is_file()
        result = json.loads(ref.read_text()) if same else {"test_acc": None}
    else:
        return None
    metrics = lines(out / "search" / "metrics.jsonl")
    backtracks = [{t: sum(r.get("backtrack_counts", {}).get(t, [])) for t in ("normal", "reduce")} for r in metrics]
    return {
        "arm": arm,
        "seed": seed,
        "search_val_acc": summary["val_acc"],
        "search_s": summary["seconds"],
        "search_peak_memory_mb": summary["peak_memory_mb"],
        "test_acc": result["test_acc"],
        "retrain": retrain,
        "params_m": result.get("params_m"),
        "genotype": summary["genotype"],
        "zeta_per_epoch": [r.get("zeta") for r in metrics],
        "backtracks_per_epoch": backtracks,
        "backtracked_edges_per_epoch": [r.get("backtracked_edges") for r in metrics],
        # Figure 7: alpha of the shallowest edge (normal cell, edge 0) after every epoch
        "alpha_edge0_normal_per_epoch": [r["alphas"]["normal"][0] for r in metrics],
        "final_alphas": metrics[-1]["alphas"],
        "ops": metrics[-1]["ops"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=["pc-darts", "idarts"], choices=sorted(ARMS))
    ap.add_argument("--timeout", type=int, default=590, help="seconds per locked command")
    ap.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=590, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "idarts_vs_pcdarts.json"))
    args = ap.parse_args()
    if args.inner is not None:
        inner(args.inner, args.arms, args.budget)
        return
    out_path = Path(args.out)
    done = []
    if out_path.is_file():  # resume: keep finished runs with the same protocol
        done = [r for r in json.loads(out_path.read_text()).get("runs", []) if r["arm"] in args.arms]
    have = {(r["arm"], r["seed"]) for r in done}
    runs = list(done)
    for seed in args.seeds:
        if all((arm, seed) in have for arm in args.arms):
            continue
        cmd = [sys.executable, __file__, "--inner", str(seed), "--arms", *args.arms, "--budget", str(args.timeout)]
        proc = subprocess.run(["flock", LOCK, "timeout", str(args.timeout + 5), *cmd], cwd=ROOT, env=env())
        if proc.returncode:
            print(f"seed {seed}: locked command failed ({proc.returncode})", flush=True)
        for arm in args.arms:
            r = collect(arm, seed)
            if r is None or r["test_acc"] is None and arm == "pc-darts":
                print(f"{arm} seed {seed}: no result", flush=True)
                continue
            runs = [x for x in runs if (x["arm"], x["seed"]) != (arm, seed)] + [r]
            print(f"{arm} seed {seed}: search val {r['search_val_acc']:.4f} test {r['test_acc']} ({r['retrain']})")
        write(out_path, runs, args)
    write(out_path, runs, args)


def write(out_path: Path, runs: list, args) -> None:
    summary = {}
    for arm in args.arms:
        rs = [r for r in runs if r["arm"] == arm]
        if not rs:
            continue
        summary[arm] = {
            "seeds": [r["seed"] for r in rs],
            "test_acc_median": statistics.median(r["test_acc"] for r in rs),
            "test_acc": [r["test_acc"] for r in rs],
            "search_val_acc_median": statistics.median(r["search_val_acc"] for r in rs),
            "search_s_median": statistics.median(r["search_s"] for r in rs),
        }
    by = {(r["arm"], r["seed"]): r for r in runs}
    same = {}
    for arm in args.arms:
        if arm == "pc-darts":
            continue
        same[arm] = {}
        for seed in args.seeds:
            a, b = by.get((arm, seed)), by.get(("pc-darts", seed))
            if a and b:
                diff = max(
                    abs(x - y)
                    for t in ("normal", "reduce")
                    for ra, rb in zip(a["final_alphas"][t], b["final_alphas"][t])
                    for x, y in zip(ra, rb)
                )
                same[arm][str(seed)] = {"same_genotype": a["genotype"] == b["genotype"], "max_abs_alpha_diff": diff}
    result = {
        "protocol": {
            "proxy": PROXY,
            "scaled": {"pc-darts": SCALED, "idarts": SCALED + IDARTS_SCALED},
            "arms": {a: ARMS[a] for a in args.arms},
        },
        "summary": summary,
        "vs_pc_darts_same_seed": same,
        "runs": runs,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
