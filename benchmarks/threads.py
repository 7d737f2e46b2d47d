"""Search steps of the quick preset on a quiet machine and beside one busy process, per thread policy.

Each policy runs in a fresh process; policies and loads alternate over rounds; medians of the per-run
mean step time. "diffnas" is what a run does: as many threads as cores are free when it starts. The
busy process is one Python loop (`while True: pass`) holding one core, as another user's job would.

    python benchmarks/threads.py --steps 12 --rounds 3 --out benchmarks/results/threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import os, sys, tempfile, time
from diffnas.runtime.system import choose_threads
choose_threads()  # as a run does when it starts
from diffnas.catalog import resolve
from diffnas.engine.search import SearchJob
from diffnas.runtime.rundir import RunDir
cfg = resolve("darts", "quick", overrides={"device": "cpu"})
job = SearchJob(cfg, RunDir(tempfile.mkdtemp(), write=False), progress=False)
m = job.method
m.epoch_start(0, job.train.steps_per_epoch)
steps, warmup = int(sys.argv[1]), 2
times = []
for i in range(warmup + steps):
    t0 = time.perf_counter()
    m.step(job.train.next(), job.val)
    times.append(time.perf_counter() - t0)
import torch
print(sum(times[warmup:]) / steps, torch.get_num_threads())
"""

POLICIES = {
    # what torch does when nothing is set: one OpenMP thread per core, libgomp's default spin-then-sleep
    "torch default": {"DIFFNAS_THREADS": "off"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "diffnas (cores free at the start)": {},
}


def run(env_extra: dict, steps: int, timeout: float) -> tuple[float, int]:
    """Seconds per step and threads of one fresh process; a process past ``timeout`` counts as inf."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_", "DIFFNAS_THREADS"))}
    env.update(env_extra)
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(steps)], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return float("inf"), 0
    if out.returncode:
        raise SystemExit(out.stderr)
    step, threads = out.stdout.split()
    return float(step), int(threads)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900, help="seconds a process may take (then: inf)")
    ap.add_argument("--policies", help="comma-separated names of POLICIES (default: all)")
    ap.add_argument("--out")
    args = ap.parse_args()
    results: dict = {}
    for r in range(args.rounds):
        for load in ("quiet", "busy"):
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None
            try:
                time.sleep(0.5 if busy else 0)
                for name, env in POLICIES.items():
                    if args.policies and name.split(" (")[0] not in args.policies.split(","):
                        continue
                    step, threads = run(env, args.steps, args.timeout)
                    results.setdefault(name, {}).setdefault(load, []).append(step)
                    print(f"round {r} {load:5s} {name:24s} {threads} threads {step:.3f} s/step", flush=True)
            finally:
                if busy:
                    busy.kill()
                    busy.wait()
    table = {}
    for name, loads in results.items():
        q, b = statistics.median(loads["quiet"]), statistics.median(loads["busy"])
        table[name] = {"quiet_s_per_step": q, "busy_s_per_step": b, "busy_over_quiet": b / q, "runs": loads}
        print(f"{name:24s} quiet {q:.3f} s/step  busy {b:.3f} s/step  busy/quiet {b / q:.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
