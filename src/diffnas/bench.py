"""`diffnas bench`: the time and memory of one search step, per method, against DARTS.

Each method is measured in a fresh subprocess (so CPU peak RSS belongs to that method
alone), on fixed random batches: a warm-up, then N timed steps of ``method.step`` (whatever
the method does per step: architecture step + weight step for DARTS). Peak memory is
CUDA's max allocated on a GPU, the process's peak RSS on CPU (this includes the Python
interpreter and PyTorch, ~200 MB, as it does for the reference script). ``rounds`` > 1
alternates the methods round by round and reports the median over rounds, so that load
from other processes hits every method alike. Figures are ratios within one run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REFERENCE = "ref-darts"  # the plain re-implementation of the original DARTS step (--reference PATH)


def machine() -> dict:
    import torch

    from .runtime.system import cpu_model

    cpu = cpu_model()
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def measure(
    method: str,
    space: str | None = None,
    channels: int = 8,
    layers: int = 5,
    batch_size: int = 32,
    image_size: int = 16,
    in_channels: int = 3,
    num_classes: int = 10,
    steps: int = 5,
    warmup: int = 2,
    device: str = "cpu",
    seed: int = 0,
    sets: dict | None = None,
) -> dict:
    """Build ``method`` at this scale and time ``steps`` search steps after ``warmup`` ones (this process)."""
    import torch

    from .catalog import resolve
    from .methods import build_method
    from .runtime.system import peak_memory_mb, reset_peak_memory
    from .spaces import space_from_config

    torch.manual_seed(seed)
    overrides: dict = {
        "search": {"channels": channels, "layers": layers, "batch_size": batch_size},
        "device": device,
    }
    if space:
        overrides["space"] = space
    for k, v in (sets or {}).items():
        if isinstance(v, dict):
            overrides.setdefault(k, {}).update(v)
        else:
            overrides[k] = v
    cfg = resolve(method, overrides=overrides)
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    m = build_method(cfg, space_from_config(cfg), in_channels, num_classes, dev)
    # measure the steady state: the method says where it starts (past frozen-architecture or warm-up epochs)
    epoch = m.steady_state_epoch()
    m.epochs = max(m.epochs, epoch + 2)
    g = torch.Generator().manual_seed(seed)

    def make_batch():
        x = torch.randn(batch_size, in_channels, image_size, image_size, generator=g)
        return x.to(dev), torch.randint(0, num_classes, (batch_size,), generator=g).to(dev)

    train, val = make_batch(), make_batch()

    class Val:
        def next(self):
            return val

    m.epoch_start(epoch, warmup + steps + 1)
    setup_mb = peak_memory_mb(dev)  # interpreter, PyTorch, model, optimizers: before the first step
    reset_peak_memory()
    times, cpu_times = [], []
    for i in range(warmup + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        m.step(train, Val())
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
    return {
        "method": method,
        "space": cfg.space,
        "device": dev.type,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        # CPU time of this (single-threaded) process: robust to other processes on a shared machine
        "cpu_median_s": statistics.median(cpu_times),
        "peak_mb": peak_memory_mb(dev),
        "setup_mb": setup_mb,
        "params_m": sum(p.numel() for p in m.weights) / 1e6,
    }


def _worker(spec: dict) -> dict:
    """Run one measurement in a fresh interpreter; its last stdout line is the JSON result."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else src
    proc = subprocess.run(
        [sys.executable, "-m", "diffnas.bench", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _reference(path: str, spec: dict) -> dict:
    """The reference DARTS step (../shared/bench/ref_darts_step.py), CPU only.

    Its own ``main`` times wall clock only; the harness below imports the script and runs
    exactly its step (same network, optimizers, batches and order of calls), timing the
    wall clock and this process's CPU time, and records its memory before the first step.
    """
    args = [
        spec["batch_size"],
        spec["image_size"],
        spec["channels"],
        spec["layers"],
        spec["steps"],
        spec["in_channels"],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _REFERENCE_HARNESS, path, str(spec["warmup"]), *map(str, args)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr or "reference failed").strip().splitlines()[-1])
    return {"method": REFERENCE, **json.loads(proc.stdout.strip().splitlines()[-1])}


_REFERENCE_HARNESS = """
import importlib.util, json, resource, statistics, sys, time
import torch, torch.nn as nn, torch.nn.functional as F
spec = importlib.util.spec_from_file_location("ref", sys.argv[1]); ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
warmup = int(sys.argv[2])
B, H, C, L, n, in_ch = (int(a) for a in sys.argv[3:9])
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
# from here on: the reference's main(), timing both clocks
torch.manual_seed(0)
net = ref.Network(C, L, in_ch)
arch = [net.alpha_normal, net.alpha_reduce]
weights = [p for p in net.parameters() if all(p is not a for a in arch)]
w_opt = torch.optim.SGD(weights, 0.025, momentum=0.9, weight_decay=3e-4)
a_opt = torch.optim.Adam(arch, 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
x, y = torch.randn(B, in_ch, H, H), torch.randint(0, 10, (B,))
xv, yv = torch.randn(B, in_ch, H, H), torch.randint(0, 10, (B,))
setup = rss()
times, cpu = [], []
for i in range(n + warmup):
    t, c = time.perf_counter(), time.process_time()
    a_opt.zero_grad()
    F.cross_entropy(net(xv), yv).backward()
    a_opt.step()
    w_opt.zero_grad()
    F.cross_entropy(net(x), y).backward()
    nn.utils.clip_grad_norm_(weights, 5)
    w_opt.step()
    if i >= warmup:
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
print(json.dumps({"median_s": statistics.median(times), "cpu_median_s": statistics.median(cpu), "times_s": times,
                  "peak_mb": rss(), "setup_mb": setup}))
"""


def run_bench(
    methods: list[str],
    rounds: int = 1,
    reference: str | None = None,
    log=print,
    **spec,
) -> dict:
    """Measure every method (fresh subprocess each), alternating them ``rounds`` times; ratios to darts."""
    from .methods import METHODS

    spec = {
        "space": None,
        "channels": 8,
        "layers": 5,
        "batch_size": 32,
        "image_size": 16,
        "in_channels": 3,
        "steps": 5,
        "warmup": 2,
        "device": "cpu",
        "seed": 0,
        "sets": {},
        **spec,
    }
    names = list(dict.fromkeys(["darts", *methods]))  # darts is the yardstick: always measured
    skipped = {n: "not built yet (not in diffnas.methods)" for n in names if n not in METHODS}
    names = [n for n in names if n in METHODS]
    if reference:
        if not Path(reference).is_file():
            skipped[REFERENCE] = f"reference script not found: {reference}"
        elif spec["device"] not in ("cpu", "auto") or _cuda():
            skipped[REFERENCE] = "the reference script runs on CPU only"
        else:
            names.append(REFERENCE)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names:
            if n in skipped:
                continue
            try:
                res = _reference(reference, spec) if n == REFERENCE else _worker({**spec, "method": n})
            except (RuntimeError, ValueError, KeyError) as e:
                skipped[n] = f"failed: {e}"
                continue
            runs[n].append(res)
            log(
                f"round {r + 1}/{rounds} {n:12s} step {res['median_s']:.3f} s (cpu {res['cpu_median_s']:.3f} s)"
                f"  peak {res['peak_mb']:.0f} MB"
            )
    results = {}
    for n, rs in runs.items():
        if n in skipped or not rs:
            continue
        results[n] = {
            "median_s": statistics.median(x["median_s"] for x in rs),
            "cpu_median_s": statistics.median(x["cpu_median_s"] for x in rs),
            "rounds_cpu_median_s": [x["cpu_median_s"] for x in rs],
            "peak_mb": statistics.median(x["peak_mb"] for x in rs),
            # memory the step itself adds: peak minus the process before its first step
            "step_mb": statistics.median(x["peak_mb"] - x["setup_mb"] for x in rs) if "setup_mb" in rs[0] else None,
            "rounds_median_s": [x["median_s"] for x in rs],
            "rounds_peak_mb": [x["peak_mb"] for x in rs],
            **{k: rs[0][k] for k in ("space", "device", "params_m") if k in rs[0]},
        }
    base = results.get("darts")
    for res in results.values():
        res["time_vs_darts"] = res["median_s"] / base["median_s"] if base else None
        res["cpu_time_vs_darts"] = res["cpu_median_s"] / base["cpu_median_s"] if base else None
        res["memory_vs_darts"] = res["peak_mb"] / base["peak_mb"] if base else None
        ok = base and res["step_mb"] is not None and base["step_mb"]
        res["step_memory_vs_darts"] = res["step_mb"] / base["step_mb"] if ok else None
    return {
        "machine": machine(),
        "config": {k: v for k, v in spec.items() if k != "method"} | {"rounds": rounds},
        "results": results,
        "skipped": skipped,
    }


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def format_table(report: dict) -> str:
    cfg = report["config"]
    mem = "CUDA max allocated" if any(r.get("device") == "cuda" for r in report["results"].values()) else "peak RSS"
    lines = [
        f"B={cfg['batch_size']} H={cfg['image_size']} C={cfg['channels']} L={cfg['layers']} in={cfg['in_channels']} "
        f"steps={cfg['steps']} (+{cfg['warmup']} warm-up) rounds={cfg['rounds']} | {report['machine']['cpu']}"
        + (f" | {report['machine']['gpu']}" if "gpu" in report["machine"] else ""),
        f"{'method':14s} {'step s':>8s} {'x darts':>8s} {'cpu s':>8s} {'x darts':>8s} "
        f"{'memory MB':>10s} {'x darts':>8s} {'step MB':>8s} {'x darts':>8s}",
        f"(memory: {mem}; step MB: peak minus the process before its first step; cpu s: process CPU time)",
    ]

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    for n, r in report["results"].items():
        lines.append(
            f"{n:14s} {r['median_s']:8.3f} {fmt(r['time_vs_darts'], '.2f'):>8s} {r['cpu_median_s']:8.3f} "
            f"{fmt(r['cpu_time_vs_darts'], '.2f'):>8s} {r['peak_mb']:10.0f} "
            f"{fmt(r['memory_vs_darts'], '.2f'):>8s} {fmt(r['step_mb'], '.0f'):>8s} "
            f"{fmt(r['step_memory_vs_darts'], '.2f'):>8s}"
        )
    for n, why in report["skipped"].items():
        lines.append(f"{n:14s} skipped: {why}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Worker entry point: ``python -m diffnas.bench '{json spec}'`` prints one JSON line."""
    spec = json.loads((argv or sys.argv[1:])[0])
    spec.pop("method_list", None)
    print(json.dumps(measure(**spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
