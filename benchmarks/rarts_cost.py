"""Cost of RARTS (and MiLeNAS) against first-order DARTS: step time and peak memory, one config.

Config: the proxy search scale (C=8, 5 cells, batch 64, 16x16 one-channel inputs, 10
classes) on random data, CPU, one thread. Step time: methods alternate round by round
(``--rounds`` x ``--steps`` steps each, after one warm-up step), medians of the per-round
mean step time. Peak memory: each method in its own fresh process, its peak RSS
(VmHWM) after the steps minus its RSS before the method was built; also the bytes of
the weights and their momentum buffers.

    flock /tmp/diffnas-heavy.lock python benchmarks/rarts_cost.py --rounds 4 --steps 3

writes benchmarks/results/rarts_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from diffnas.catalog import resolve  # noqa: E402
from diffnas.methods import build_method  # noqa: E402
from diffnas.spaces import get_space  # noqa: E402

SEARCH = {"channels": 8, "layers": 5, "batch_size": 64, "epochs": 4}
IMAGE, CLASSES = 16, 10


class Stream:
    def __init__(self, seed):
        g = torch.Generator().manual_seed(seed)
        self.batches = [
            (
                torch.randn(SEARCH["batch_size"], 1, IMAGE, IMAGE, generator=g),
                torch.randint(0, CLASSES, (64,), generator=g),
            )
            for _ in range(4)
        ]
        self.i = 0

    def next(self):
        self.i += 1
        return self.batches[self.i % len(self.batches)]


def make(method: str):
    torch.manual_seed(0)
    cfg = resolve(method, overrides={"search": SEARCH})
    m = build_method(cfg, get_space("darts", 4), 1, CLASSES, "cpu")
    m.epoch_start(0, 100)
    return m


def status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process; unlike ru_maxrss, VmHWM does not inherit the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def state_mb(m) -> float:
    params = list(m.weights) + [p for p in getattr(m, "weights_y", []) if all(p is not q for q in m.weights)]
    n = sum(p.numel() for p in params)
    return 2 * 4 * n / 2**20  # weights + momentum buffers, float32


def memory_child(method: str, steps: int) -> None:
    torch.set_num_threads(1)
    train, val = Stream(1), Stream(2)
    base = status_mb("VmRSS")
    m = make(method)
    for _ in range(steps):
        m.step(train.next(), val)
    peak = status_mb("VmHWM")
    print(json.dumps({"peak_rss_mb": peak, "rss_before_mb": base, "weights_and_momentum_mb": state_mb(m)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["darts", "rarts", "milenas"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    ap.add_argument("--memory-only", action="store_true", help="redo the memory part, keep the timings in --out")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rarts_cost.json"))
    args = ap.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args.steps)
    torch.set_num_threads(1)
    if args.memory_only:
        result = json.loads(Path(args.out).read_text())
        times = {name: result[name]["step_s_rounds"] for name in args.methods}
        return finish(args, times, measure_memory(args))
    methods = {name: make(name) for name in args.methods}
    streams = {name: (Stream(1), Stream(2)) for name in args.methods}
    for name, m in methods.items():  # warm-up
        m.step(streams[name][0].next(), streams[name][1])
    times = {name: [] for name in args.methods}
    for r in range(args.rounds):
        order = args.methods if r % 2 == 0 else args.methods[::-1]
        for name in order:
            m, (train, val) = methods[name], streams[name]
            t0 = time.perf_counter()
            for _ in range(args.steps):
                m.step(train.next(), val)
            times[name].append((time.perf_counter() - t0) / args.steps)
    finish(args, times, measure_memory(args))


def measure_memory(args) -> dict:
    memory = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for name in args.methods:
        cmd = [sys.executable, __file__, "--memory-child", name, "--steps", str(args.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
        mem = json.loads(out.strip().splitlines()[-1])
        mem["method_peak_mb"] = mem["peak_rss_mb"] - mem["rss_before_mb"]
        memory[name] = mem
    return memory


def finish(args, times: dict, memory: dict) -> None:
    result = {"config": {"search": SEARCH, "image_size": IMAGE, "classes": CLASSES, "device": "cpu", "threads": 1}}
    for name in args.methods:
        med = statistics.median(times[name])
        result[name] = {"step_s_median": med, "step_s_rounds": times[name], **memory[name]}
    base = result[args.methods[0]]
    for name in args.methods[1:]:
        result[name]["step_time_vs_" + args.methods[0]] = result[name]["step_s_median"] / base["step_s_median"]
        result[name]["peak_memory_vs_" + args.methods[0]] = result[name]["method_peak_mb"] / base["method_peak_mb"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
