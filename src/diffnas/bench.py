"""`diffnas bench`: the time and memory of one search step, per method, against DARTS.

Each method is measured in a fresh subprocess (so CPU peak RSS belongs to that method
alone), on fixed random batches: a warm-up, then N timed steps of ``method.step`` (whatever
the method does per step: architecture step + weight step for DARTS). Peak memory is
CUDA's max allocated on a GPU, the process's peak RSS on CPU (this includes the Python
interpreter and PyTorch, ~200 MB, as it does for the reference script). ``rounds`` > 1
alternates the methods round by round and reports the median over rounds, so that load
from other processes hits every method alike. Figures are ratios within one run.

Step memory on CPU (``step_mb``: peak minus the process before its first step) comes from
a second fresh process that runs the same steps untimed under ``LIVE_MEMORY_ENV``: glibc
then gives every allocation of 64 KiB or more its own mapping and returns it when freed,
so the peak RSS follows the memory the step holds (the CPU analogue of CUDA's max
allocated). With glibc's defaults a freed tensor's memory mostly stays in the heap (the
mmap threshold grows to the largest freed block), so RSS keeps the high-water mark of
whatever fragments the heap: that figure is kept as ``rss_step_mb``. The mappings cost
page faults (steps several times slower), hence a separate process: times come from the
first, with the defaults.

During the timed steps a ``Probe`` is the method's ``probe``: the step frame
(``SearchMethod.phase``) enters ``probe.phase("arch")`` / ``probe.phase("weight")`` around
the two updates, and the probe times each phase and counts the tensors autograd saves for
backward in it (``torch.autograd.graph.saved_tensors_hooks``); whatever runs in a step
outside every phase is ``other``. A method entry may carry its own overrides,
``NAME[KEY=VALUE,...]`` (e.g. ``nasp[nasp.arch_ops=selected]``), measured under that label.
The entry ``derived`` times the retraining network's training step instead (``DerivedStep``):
the floor a single-path method's step approaches.
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace

from .config import deep_merge

# The reference step script of each space (--reference PATH): its row's label and the optimizer settings of
# the public code it re-implements (its architecture parameters are the network's ``alpha*`` parameters)
REFERENCES = {
    "darts": {"label": "ref-darts", "wd": 3e-4, "nesterov": False},  # ../shared/bench/ref_darts_step.py
    "nb201": {"label": "ref-nb201", "wd": 5e-4, "nesterov": True},  # ../shared/bench/ref_nb201_step.py
}
REFERENCE = REFERENCES["darts"]["label"]
DERIVED = "derived"  # the training step of the derived network at the search's width and cells (DerivedStep)
# the memory pass's allocator: every block of 64 KiB or more is its own mapping, unmapped when freed (glibc)
LIVE_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def reference_of(space: str | None) -> dict:
    return REFERENCES.get(space or "darts", REFERENCES["darts"])


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


PHASES = ("arch", "weight")  # the step frame's phases, in table order; "other" is the rest of a step
OTHER = "other"


class _Saved:
    """What the pack hook stores instead of a saved tensor: the tensor, and a release call when autograd drops it."""

    __slots__ = ("tensor", "release", "key")

    def __init__(self, tensor, release, key):
        self.tensor, self.release, self.key = tensor, release, key

    def __del__(self):
        self.release(self.key)


class Probe:
    """Times the phases of a search step and counts what autograd saves for backward in each.

    Set as ``method.probe``; wrap each step in ``with probe.step():``. The method's frame
    enters ``probe.phase(name)`` around its updates. Time is charged to the innermost open
    phase (exclusive), the rest of the step to ``other``; on CUDA every phase boundary
    synchronizes. With ``count_saved`` a saved tensor is charged to the innermost open phase
    (``other`` outside every phase) with the bytes of its storage, each storage once per
    phase and step while autograd holds it (views, and tensors saved by several ops, are not
    counted twice; a storage released and saved again is counted again). Parameters (and
    other tensors whose storage is in ``exclude``) are not activations and are not counted.
    Per step it records, per phase: seconds, times entered, saved tensors, saved bytes
    (distinct storages); and the peak of the saved bytes alive at once in the step.
    """

    def __init__(self, device, exclude=(), count_saved: bool = True):
        import torch

        self._torch = torch
        self.cuda = torch.device(device).type == "cuda"
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.count_saved = count_saved
        self.steps: list[dict] = []
        self.live: dict = {}  # storage data_ptr -> [saved tensors holding it, bytes, {(step, phase) charged}]
        self.live_bytes = 0
        self._stack: list[str] = []
        self._cur: dict | None = None
        self._rec: dict | None = None  # the record saved tensors are charged to now
        self._tag: tuple | None = None  # (step, phase) of that record

    def _sync(self) -> None:
        if self.cuda:
            self._torch.cuda.synchronize()

    @staticmethod
    def _record_in(cur: dict, name: str) -> dict:
        rec = cur["phases"].get(name)
        if rec is None:
            rec = cur["phases"][name] = {"s": 0.0, "entered": 0, "tensors": 0, "bytes": 0}
        return rec

    def _enter(self, name: str) -> None:
        """Saved tensors go to ``name`` from now on."""
        self._rec = self._record_in(self._cur, name)
        self._tag = (len(self.steps), name)

    def _charge(self, now: float) -> None:
        if self._stack:
            self._cur["phases"][self._stack[-1]]["s"] += now - self._mark
        self._mark = now

    @contextmanager
    def step(self):
        """One measured step: the hooks are on, phase times and saved bytes go to a new record."""
        self._cur = {"phases": {}, "peak_saved_bytes": self.live_bytes}
        self._stack = []
        self._enter(OTHER)
        hooks = (
            self._torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
            if self.count_saved
            else nullcontext()
        )
        with hooks:
            self._sync()
            start = self._mark = time.perf_counter()
            try:
                yield self._cur
            finally:
                self._sync()
                end = time.perf_counter()
        cur, self._cur, self._rec = self._cur, None, None
        cur["s"] = end - start
        other = self._record_in(cur, OTHER)
        other["s"] = max(0.0, cur["s"] - sum(r["s"] for n, r in cur["phases"].items() if n != OTHER))
        self.steps.append(cur)

    @contextmanager
    def phase(self, name: str):
        if self._cur is None:  # outside a measured step (a warm-up step): nothing to record
            yield
            return
        self._record_in(self._cur, name)["entered"] += 1
        self._sync()
        self._charge(time.perf_counter())
        self._stack.append(name)
        self._enter(name)
        try:
            yield
        finally:
            self._sync()
            self._charge(time.perf_counter())
            self._stack.pop()
            if self._cur is not None:
                self._enter(self._stack[-1] if self._stack else OTHER)

    # -- saved tensors ---------------------------------------------------------------------
    def _pack(self, t):
        rec = self._rec
        if rec is None:
            return t
        try:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
        except (RuntimeError, NotImplementedError, TypeError):  # no plain storage (sparse, subclasses)
            storage, ptr = None, t.data_ptr()
        if ptr in self.exclude:
            return t
        rec["tensors"] += 1
        entry = self.live.get(ptr)
        if entry is None:
            nbytes = storage.nbytes() if storage is not None else t.numel() * t.element_size()
            self.live[ptr] = [1, nbytes, {self._tag}]
            rec["bytes"] += nbytes
            self.live_bytes += nbytes
            if self.live_bytes > self._cur["peak_saved_bytes"]:
                self._cur["peak_saved_bytes"] = self.live_bytes
        else:
            entry[0] += 1
            if self._tag not in entry[2]:
                entry[2].add(self._tag)
                rec["bytes"] += entry[1]
        # detached: a saved output holding its own grad_fn would make a reference cycle (node -> saved -> tensor
        # -> node) that a node the backward never runs (an architecture step skips the stem) never breaks;
        # autograd restores the saved tensor's grad_fn from its own metadata when it unpacks it
        return _Saved(t.detach(), self._release, ptr)

    @staticmethod
    def _unpack(packed):
        return packed.tensor if type(packed) is _Saved else packed

    def _release(self, ptr) -> None:
        entry = self.live.get(ptr)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] <= 0:
            del self.live[ptr]
            self.live_bytes -= entry[1]

    # -- summary -----------------------------------------------------------------------------
    def summary(self) -> dict:
        """Medians over the recorded steps; a phase a step did not enter counts 0 s and 0 MB in that step."""
        names = [*PHASES, *sorted({n for st in self.steps for n in st["phases"]} - {*PHASES, OTHER}), OTHER]
        zero = {"s": 0.0, "entered": 0, "tensors": 0, "bytes": 0}
        out = {}
        for n in names:
            recs = [st["phases"].get(n) or zero for st in self.steps]
            ran = [r for r in recs if r["entered"]]
            out[n] = {
                "median_s": _median([r["s"] for r in recs]),
                "steps": len(ran) if n != OTHER else len(recs),
                "median_s_when_run": _median([r["s"] for r in ran]) if ran else None,
                "saved_tensors": _median([r["tensors"] for r in recs]),
                "saved_mb": _median([r["bytes"] / 2**20 for r in recs]),
            }
        return {
            "phases": out,
            "saved_mb": _median([sum(r["bytes"] for r in st["phases"].values()) / 2**20 for st in self.steps]),
            "peak_saved_mb": _median([st["peak_saved_bytes"] / 2**20 for st in self.steps]),
        }


def _median(xs):
    return statistics.median(xs) if xs else 0.0


class DerivedStep:
    """The training step of the network ``diffnas train`` builds, at the search's width and cells.

    Its architecture is the DARTS rule on the alphas every method of this seed starts from
    (the relaxation is built first, from the same seed), so its cells are the kept edges of
    the supernet's with the same ops: max-alpha runs these ops on every edge. One step is
    what retraining does per batch (forward, loss, backward, clip, SGD), in the weight
    phase; no auxiliary head, no drop path. Bench measures it like a method.
    """

    name = DERIVED

    def __init__(self, cfg, space, in_channels: int, num_classes: int, device):
        import torch

        from .relax import build_relaxation

        relax = build_relaxation(cfg.search.relaxation or "softmax", space, cfg)
        self.genotype = relax.genotype()
        self.cfg, self.task, self.probe = cfg, space.task, None
        self.net = space.build_network(self.genotype, cfg, in_channels, num_classes).to(device)
        self.weights, self.arch = list(self.net.parameters()), []
        t = cfg.train
        self.opt = torch.optim.SGD(self.weights, t.lr, momentum=t.get("momentum", 0.0), weight_decay=t.wd)
        self.epochs = 1

    def steady_state_epoch(self) -> int:
        return 0

    def epoch_start(self, epoch: int, steps_per_epoch: int) -> None:
        self.net.train()

    def modules(self) -> list:
        return [self.net]

    def step(self, batch, val_batches) -> dict:
        import torch.nn as nn

        with self.probe.phase("weight") if self.probe is not None else nullcontext():
            loss, _ = self.task.batch_loss(self.net, batch)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.train.grad_clip:
                nn.utils.clip_grad_norm_(self.weights, self.cfg.train.grad_clip)
            self.opt.step()
        return {"loss": loss.item()}


def _built(
    method, space, channels, layers, batch_size, image_size, in_channels, num_classes, device, seed, sets, epoch, **_
):
    """``method`` built at this scale on fixed random batches (``measure``'s arguments), at the epoch it is timed in:
    ``m``, its device ``dev``, ``train`` and ``Val`` (serves the val batch), ``epoch``, ``num_classes``, ``cfg``."""
    import torch

    from .catalog import resolve
    from .config import DEFAULTS
    from .methods import build_method
    from .spaces import get_space_class, space_from_config

    torch.manual_seed(seed)
    overrides: dict = {
        "search": {"channels": channels, "layers": layers, "batch_size": batch_size},
        "device": device,
    }
    if space:
        overrides["space"] = space
        takes = get_space_class(space).datasets
        if takes and DEFAULTS["dataset"] not in takes:
            overrides["dataset"] = takes[0]
    overrides = deep_merge(overrides, sets or {})
    name = "darts" if method == DERIVED else method
    cfg = resolve(name, overrides=overrides)
    if method == DERIVED:  # the retraining network at the search's width and cells, its plain step
        train = {"channels": channels, "layers": layers, "batch_size": batch_size, "auxiliary": 0.0}
        train = {k: v for k, v in train.items() if k in cfg.train}  # the keys the space's network has
        cfg = resolve(name, overrides=deep_merge({**overrides, "train": train}, sets or {}))
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    build = DerivedStep if method == DERIVED else build_method
    the_space = space_from_config(cfg)
    task = the_space.task
    num_classes = num_classes or task.bench_classes
    m = build(cfg, the_space, in_channels, num_classes, dev)
    if epoch is None:
        # the steady state: the method says where it starts (past frozen-architecture or warm-up epochs)
        epoch = m.steady_state_epoch()
        m.epochs = max(m.epochs, epoch + 2)
    else:
        m.epochs = max(m.epochs, epoch + 1)
    g = torch.Generator().manual_seed(seed)

    shape = {"image_size": image_size, "in_channels": in_channels}
    train = task.random_batch(cfg, batch_size, num_classes, g, dev, train=True, **shape)
    val = task.random_batch(cfg, batch_size, num_classes, g, dev, train=False, **shape)

    class Val:
        def next(self):
            return val

    return SimpleNamespace(m=m, dev=dev, train=train, Val=Val, epoch=epoch, num_classes=num_classes, cfg=cfg)


def measure(
    method: str,
    space: str | None = None,
    channels: int = 8,
    layers: int = 5,
    batch_size: int = 32,
    image_size: int = 16,
    in_channels: int = 3,
    num_classes: int | None = None,
    steps: int = 5,
    warmup: int = 2,
    device: str = "cpu",
    seed: int = 0,
    sets: dict | None = None,
    epoch: int | None = None,
    saved_steps: int = 2,
    memory_only: bool = False,
) -> dict:
    """Build ``method`` at this scale and time ``steps`` search steps after ``warmup`` ones (this process).

    ``epoch``: the epoch the steps belong to (default: the method's steady state,
    ``steady_state_epoch()``). The timed steps time their phases (a ``Probe`` without
    hooks); then ``saved_steps`` more steps count the tensors saved for backward per phase
    (a Python call per saved tensor costs a few per cent of a step: kept out of the timed
    steps, and out of the peak memory, which is read before them). 0: nothing counted.
    The batches are the space's task's (``random_batch``): images of ``image_size`` and
    ``in_channels``, or windows of ``search.bptt`` tokens; ``num_classes`` (classes or words)
    defaults to the task's ``bench_classes``. A space that does not take the default data
    set is measured under its first one (only the config's name: nothing is read).
    """

    from .runtime.system import file_pages_mb, peak_memory_mb, reset_peak_memory

    b = _built(**locals())  # (measure's arguments)
    m, dev, train, Val, epoch = b.m, b.dev, b.train, b.Val, b.epoch
    # parameters and buffers are no activations: the probe does not count them when an op saves them
    held = [*m.weights, *m.arch, *(t for net in m.modules() for t in (*net.parameters(), *net.buffers()))]
    probe = Probe(dev, count_saved=False)
    counter = Probe(dev, exclude=held)
    m.epoch_start(epoch, warmup + steps + saved_steps + 1)
    setup_mb = peak_memory_mb(dev)  # interpreter, PyTorch, model, optimizers: before the first step
    setup_file_mb = file_pages_mb()
    reset_peak_memory()
    if memory_only:
        for _ in range(warmup + steps):
            m.step(train, Val())
        return {"setup_mb": setup_mb, "peak_mb": peak_memory_mb(dev), "code_mb": file_pages_mb() - setup_file_mb}
    for _ in range(warmup):
        m.step(train, Val())
    m.probe = probe
    timed = [_timed_step(b, probe.step()) for _ in range(steps)]  # (wall s, CPU s) per step
    peak_mb = peak_memory_mb(dev)
    m.probe = counter
    for _ in range(saved_steps):
        with counter.step():
            m.step(train, Val())
    m.probe = None
    timing, saved = probe.summary(), counter.summary()
    phases = {
        n: {
            **{k: v for k, v in timing["phases"].get(n, {}).items() if not k.startswith("saved")},
            **{k: v for k, v in saved["phases"].get(n, {}).items() if k.startswith("saved")},
        }
        for n in dict.fromkeys([*timing["phases"], *saved["phases"]])
    }
    if not saved_steps:
        for ph in phases.values():
            ph.update(saved_tensors=None, saved_mb=None)
    return {
        **_facts(method, b, [t for t, _ in timed], [c for _, c in timed]),
        "peak_mb": peak_mb,
        "setup_mb": setup_mb,
        "phases": phases,
        "saved_steps": saved_steps,
        "saved_mb": saved["saved_mb"] if saved_steps else None,
        "peak_saved_mb": saved["peak_saved_mb"] if saved_steps else None,
        "steps_detail": [
            {"s": st["s"], "phases_s": {n: r["s"] for n, r in st["phases"].items()}} for st in probe.steps
        ],
        "saved_detail": [
            {
                "peak_saved_mb": st["peak_saved_bytes"] / 2**20,
                "phases": {
                    n: {"tensors": r["tensors"], "saved_mb": r["bytes"] / 2**20} for n, r in st["phases"].items()
                },
            }
            for st in counter.steps
        ],
    }


def measure_interleaved(specs: list[dict]) -> list[dict]:
    """Time several entries in one process, their steps taken in turn: one step of each entry per cycle.

    A shared machine's speed drifts over minutes (other tenants' load, memory bandwidth);
    entries timed one after another in their own processes then see different machines,
    and their ratios carry the drift. Here an entry with fewer ``steps`` than the longest
    is timed in cycles spread over the run, and each cycle starts one entry later, so every
    entry sees the run's drift alike. Each spec is ``measure``'s arguments; only times come
    back (memory needs a process of its own: ``run_bench`` runs it apart).
    """

    defaults = {k: p.default for k, p in inspect.signature(measure).parameters.items() if k != "method"}
    specs = [{**defaults, **s} for s in specs]
    built = [_built(**s) for s in specs]
    steps = [s["steps"] for s in specs]
    for b, s in zip(built, specs):
        b.m.epoch_start(b.epoch, s["warmup"] + s["steps"] + 1)
    for i in range(max(s["warmup"] for s in specs)):
        for b, s in zip(built, specs):
            if i < s["warmup"]:
                b.m.step(b.train, b.Val())
    cycles = max(steps)
    due = [{c * cycles // n for c in range(n)} for n in steps]  # the cycles that time each entry: spread
    times: list[list] = [[] for _ in specs]
    cpu: list[list] = [[] for _ in specs]
    for c in range(cycles):
        for k in range(len(specs)):
            j = (c + k) % len(specs)
            if c in due[j]:
                wall, cpu_s = _timed_step(built[j])
                times[j].append(wall)
                cpu[j].append(cpu_s)
    return [{**_facts(s["method"], b, t, c), "interleaved": True} for s, b, t, c in zip(specs, built, times, cpu)]


def _timed_step(b, around=None) -> tuple[float, float]:
    """One step of the built method ``b`` (within ``around``, a context): (wall s, this process's CPU s)."""
    import torch

    cuda = b.dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    t, c = time.perf_counter(), time.process_time()
    with around or nullcontext():
        b.m.step(b.train, b.Val())
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t, time.process_time() - c


def _facts(method: str, b, times: list, cpu_times: list) -> dict:
    """What a measurement reports of every entry: what was stepped, its step times, its size."""
    m = b.m
    return {
        "method": method,
        "space": b.cfg.space,
        **({"genotype": m.genotype.to_dict()} if method == DERIVED else {}),
        "device": b.dev.type,
        "input_shape": list(b.train[0].shape),
        "num_classes": b.num_classes,
        "epoch": b.epoch,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        # CPU time of this (single-threaded) process: robust to other processes on a shared machine
        "cpu_median_s": statistics.median(cpu_times),
        # the mean: a search's time per step when a step's cost depends on a random draw (DARTS-CD's edge)
        "cpu_mean_s": statistics.mean(cpu_times),
        "cpu_times_s": cpu_times,
        "params_m": sum(p.numel() for p in m.weights) / 1e6,
        # every network's parameters and every optimizer's state (RARTS: two networks, three optimizers)
        "train_state_mb": sum(t.numel() * t.element_size() for t in _train_state(m)) / 2**20,
    }


def _train_state(m) -> list:
    """The distinct tensors a method keeps between steps: its networks' parameters and buffers, optimizer states."""
    import torch

    tensors = {}
    for net in m.modules():
        for t in (*net.parameters(), *net.buffers()):
            tensors[id(t)] = t
    for t in (*m.weights, *m.arch):
        tensors[id(t)] = t
    for opt in vars(m).values():
        if isinstance(opt, torch.optim.Optimizer):
            for st in opt.state.values():
                for v in st.values():
                    if torch.is_tensor(v):
                        tensors[id(v)] = v
    return list(tensors.values())


def parse_methods(text: str) -> list[str]:
    """``"darts,nasp[nasp.arch_ops=selected,search.x=1]"`` -> the entries, split on commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [e.strip() for e in out if e.strip()]


def split_entry(entry: str) -> tuple[str, dict]:
    """``"nasp[nasp.arch_ops=selected]"`` -> ``("nasp", {"nasp": {"arch_ops": "selected"}})``; a plain name: ``{}``."""
    from .config import parse_set

    name, bracket, rest = entry.partition("[")
    if not bracket:
        return entry.strip(), {}
    if not rest.endswith("]"):
        raise ValueError(f"method entry '{entry}': expected NAME[KEY=VALUE,...]")
    items = [i for i in rest[:-1].split(",") if i.strip()]
    return name.strip(), parse_set(items)


def _worker(spec: dict) -> dict:
    """Run one measurement in a fresh interpreter, then (CPU, ``live_memory``) its memory pass in another."""
    res = _run_worker(spec)
    if _memory_pass(spec):
        live = _run_worker({**spec, "memory_only": True}, LIVE_MEMORY_ENV)
        res.update(live_setup_mb=live["setup_mb"], live_peak_mb=live["peak_mb"], live_code_mb=live["code_mb"])
    return res


def _memory_pass(spec: dict) -> bool:
    return bool(spec.get("live_memory", True)) and spec.get("device", "cpu") == "cpu"


def _env(extra_env: dict | None = None) -> dict:
    """A measuring subprocess's environment: this one, ``extra_env``, and this checkout's diffnas first."""
    env = {**os.environ, **(extra_env or {})}
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else src
    return env


def _run_worker(spec: dict | list, extra_env: dict | None = None):
    """One ``measure`` (a list: ``measure_interleaved``) in a fresh interpreter; the last stdout line is the JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", "diffnas.bench", json.dumps(spec)], capture_output=True, text=True, env=_env(extra_env)
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
    ref = reference_of(spec["space"])
    args += [ref["wd"], int(ref["nesterov"])]

    def run(extra_env=None):
        proc = subprocess.run(
            [sys.executable, "-c", _REFERENCE_HARNESS, path, str(spec["warmup"]), *map(str, args)],
            capture_output=True,
            text=True,
            env=_env(extra_env),
        )
        if proc.returncode != 0:
            raise RuntimeError((proc.stderr or "reference failed").strip().splitlines()[-1])
        return json.loads(proc.stdout.strip().splitlines()[-1])

    res = {"method": ref["label"], **run()}
    if _memory_pass(spec):  # the same steps under the memory pass's allocator, as every entry
        live = run(LIVE_MEMORY_ENV)
        res.update(live_setup_mb=live["setup_mb"], live_peak_mb=live["peak_mb"], live_code_mb=live["code_mb"])
    return res


_REFERENCE_HARNESS = """
import importlib.util, json, resource, statistics, sys, time
import torch, torch.nn as nn, torch.nn.functional as F
spec = importlib.util.spec_from_file_location("ref", sys.argv[1]); ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
warmup = int(sys.argv[2])
B, H, C, L, n, in_ch = (int(a) for a in sys.argv[3:9])
wd, nesterov = float(sys.argv[9]), bool(int(sys.argv[10]))
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from diffnas.runtime.system import file_pages_mb
# from here on: the reference's main(), timing both clocks
torch.manual_seed(0)
net = ref.Network(C, L, in_ch)
arch = [p for name, p in net.named_parameters() if name.startswith("alpha")]
weights = [p for p in net.parameters() if all(p is not a for a in arch)]
w_opt = torch.optim.SGD(weights, 0.025, momentum=0.9, weight_decay=wd, nesterov=nesterov)
a_opt = torch.optim.Adam(arch, 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
x, y = torch.randn(B, in_ch, H, H), torch.randint(0, 10, (B,))
xv, yv = torch.randn(B, in_ch, H, H), torch.randint(0, 10, (B,))
setup, setup_file = rss(), file_pages_mb()
times, cpu, arch, weight = [], [], [], []
for i in range(n + warmup):
    t, c = time.perf_counter(), time.process_time()
    a_opt.zero_grad()
    F.cross_entropy(net(xv), yv).backward()
    a_opt.step()
    t1 = time.perf_counter()  # (the harness's only addition inside the step: one clock read)
    w_opt.zero_grad()
    F.cross_entropy(net(x), y).backward()
    nn.utils.clip_grad_norm_(weights, 5)
    w_opt.step()
    if i >= warmup:
        t2 = time.perf_counter()
        times.append(t2 - t)
        cpu.append(time.process_time() - c)
        arch.append(t1 - t)
        weight.append(t2 - t1)
print(json.dumps({"median_s": statistics.median(times), "cpu_median_s": statistics.median(cpu), "times_s": times,
                  "arch_s": statistics.median(arch), "weight_s": statistics.median(weight),
                  "peak_mb": rss(), "setup_mb": setup, "code_mb": file_pages_mb() - setup_file}))
"""


# what a method's result keeps of its first round as is
KEPT = ("method", "space", "device", "input_shape", "num_classes", "epoch", "params_m", "train_state_mb")


def run_bench(
    methods: list[str],
    rounds: int = 1,
    reference: str | None = None,
    log=print,
    interleave: bool = False,
    **spec,
) -> dict:
    """Measure every method (fresh subprocess each), alternating them ``rounds`` times; ratios to darts.

    An entry of ``methods`` is a method name or ``NAME[KEY=VALUE,...]``: that method with
    these config overrides on top of ``sets``, reported under the whole entry as its label.
    ``interleave``: per round, time all entries in one process, a step of each in turn
    (``measure_interleaved``: a drifting machine slows them alike), and take each entry's
    memory from its own memory pass; no phase split, no saved-tensor count.
    """
    from .methods import METHODS

    spec = {
        "space": None,
        "channels": 8,
        "layers": 5,
        "batch_size": 32,
        "image_size": 16,
        "in_channels": 3,
        "num_classes": None,
        "steps": 5,
        "warmup": 2,
        "device": "cpu",
        "seed": 0,
        "sets": {},
        "epoch": None,
        "saved_steps": 2,
        "live_memory": True,  # CPU: step memory from a second process under LIVE_MEMORY_ENV
        **spec,
    }
    labels = list(dict.fromkeys(["darts", *methods]))  # darts is the yardstick: always measured
    entries, skipped = {}, {}
    for label in labels:
        try:
            name, own = split_entry(label)
        except (ValueError, KeyError) as e:
            skipped[label] = str(e)
            continue
        if name not in METHODS and name != DERIVED:
            skipped[label] = "not built yet (not in diffnas.methods)"
            continue
        steps = own.pop("steps", None)  # (not a config key: this entry's own number of timed steps)
        entries[label] = (name, deep_merge(spec["sets"], own), {} if steps is None else {"steps": int(steps)})
    names = list(entries)
    ref_label = reference_of(spec["space"])["label"]
    if reference:
        if not Path(reference).is_file():
            skipped[ref_label] = f"reference script not found: {reference}"
        elif spec["device"] not in ("cpu", "auto") or _cuda():
            skipped[ref_label] = "the reference script runs on CPU only"
        else:
            names.append(ref_label)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        timed = _interleaved(entries, spec, skipped) if interleave else {}
        for n in names:
            if n in skipped:
                continue
            try:
                if n == ref_label:
                    res = _reference(reference, spec)
                elif interleave:
                    name, sets, own_spec = entries[n]
                    live = _run_worker({**spec, "method": name, "sets": sets, **own_spec, "memory_only": True},
                                       LIVE_MEMORY_ENV) if _memory_pass(spec) else {}  # fmt: skip
                    res = {**timed[n], "peak_mb": live.get("peak_mb", float("nan"))}
                    if live:
                        res.update({f"live_{k}": live[k] for k in ("setup_mb", "peak_mb", "code_mb")})
                else:
                    name, sets, own_spec = entries[n]
                    res = _worker({**spec, "method": name, "sets": sets, **own_spec})
            except (RuntimeError, ValueError, KeyError) as e:
                skipped[n] = f"failed: {e}"
                continue
            runs[n].append(res)
            phases = res.get("phases", {})
            split = "  ".join(
                f"{p} {phases[p]['median_s']:.3f} s" for p in PHASES if p in phases and phases[p]["steps"]
            )
            saved = f"  saved {res['saved_mb']:.1f} MB" if res.get("saved_mb") is not None else ""
            log(
                f"round {r + 1}/{rounds} {n:12s} step {res['median_s']:.3f} s (cpu {res['cpu_median_s']:.3f} s)"
                + (f" [{split}]" if split else "")
                + f"  peak {res['peak_mb']:.0f} MB{saved}"
                + (f"  step {_step_mb([res], 'live_'):.0f} MB" if "live_peak_mb" in res else "")
            )
    results = {}
    for n, rs in runs.items():
        if n in skipped or not rs:
            continue
        res = {
            "median_s": statistics.median(x["median_s"] for x in rs),
            "cpu_median_s": statistics.median(x["cpu_median_s"] for x in rs),
            "rounds_cpu_median_s": [x["cpu_median_s"] for x in rs],
            "cpu_mean_s": statistics.median(x["cpu_mean_s"] for x in rs) if "cpu_mean_s" in rs[0] else None,
            "peak_mb": statistics.median(x["peak_mb"] for x in rs),
            # memory the step itself adds: peak minus the process before its first step (the memory pass's, on CPU)
            "step_mb": _step_mb(rs, "live_") if "live_peak_mb" in rs[0] else _step_mb(rs),
            # library code the steps paged in (file-backed RSS), left out of step_mb
            "code_mb": statistics.median(x["live_code_mb"] for x in rs) if "live_code_mb" in rs[0] else None,
            # the same from the timed process (CPU: glibc's defaults, freed memory the heap keeps included)
            "rss_step_mb": _step_mb(rs),
            "rounds_median_s": [x["median_s"] for x in rs],
            "rounds_peak_mb": [x["peak_mb"] for x in rs],
            **{k: rs[0][k] for k in KEPT if k in rs[0]},
        }
        if n != ref_label:
            res["sets"] = entries[n][1]
            res["timed_steps"] = entries[n][2].get("steps", spec["steps"])
        res.update(_phase_results(rs))
        results[n] = res
    base = results.get("darts")

    def ratio(res, key, to=None):
        a, b = res.get(key), ((base if to is None else to) or {}).get(key)
        return a / b if a is not None and b else None

    for res in results.values():
        res["time_vs_darts"] = ratio(res, "median_s")
        res["cpu_time_vs_darts"] = ratio(res, "cpu_median_s")
        res["cpu_mean_vs_darts"] = ratio(res, "cpu_mean_s")
        res["memory_vs_darts"] = ratio(res, "peak_mb")
        res["step_memory_vs_darts"] = ratio(res, "step_mb")
        res["arch_time_vs_darts"] = ratio(res, "arch_s")
        res["weight_time_vs_darts"] = ratio(res, "weight_s")
        res["saved_vs_darts"] = ratio(res, "saved_mb")
        if DERIVED in results:  # a single-path method against the floor it approaches
            derived = results[DERIVED]
            res["time_vs_derived"] = ratio(res, "median_s", derived)
            res["cpu_time_vs_derived"] = ratio(res, "cpu_median_s", derived)
            res["step_memory_vs_derived"] = ratio(res, "step_mb", derived)
    return {
        "machine": machine(),
        "config": {k: v for k, v in spec.items() if k != "method"} | {"rounds": rounds},
        "results": results,
        "skipped": skipped,
    }


def _interleaved(entries: dict, spec: dict, skipped: dict) -> dict:
    """{label: times} of every entry not skipped, timed in turn in one fresh process (``measure_interleaved``)."""
    labels = [n for n in entries if n not in skipped]
    specs = [{**spec, "method": entries[n][0], "sets": entries[n][1], **entries[n][2]} for n in labels]
    try:
        return dict(zip(labels, _run_worker(specs)))
    except (RuntimeError, ValueError, KeyError) as e:
        skipped.update({n: f"failed: {e}" for n in labels})
        return {}


def _step_mb(rs: list[dict], prefix: str = ""):
    """Peak minus the process before its first step; in the memory pass less the library code paged in."""
    if f"{prefix}setup_mb" not in rs[0]:
        return None
    return statistics.median(x[f"{prefix}peak_mb"] - x[f"{prefix}setup_mb"] - x.get(f"{prefix}code_mb", 0) for x in rs)


def _phase_results(rs: list[dict]) -> dict:
    """The per-phase figures over rounds (medians of the rounds' medians); None where nothing was measured."""
    if "phases" not in rs[0]:  # the reference harness: its two halves timed, nothing counted
        out = {f"{p}_s": statistics.median(x[f"{p}_s"] for x in rs) if f"{p}_s" in rs[0] else None for p in PHASES}
        return {**out, "other_s": None, "saved_mb": None, "peak_saved_mb": None}
    names = list(rs[0]["phases"])
    phases = {}
    for n in names:
        per = [x["phases"].get(n) for x in rs]
        per = [p for p in per if p is not None]
        when = [p["median_s_when_run"] for p in per if p.get("median_s_when_run") is not None]
        phases[n] = {
            "median_s": statistics.median(p.get("median_s", 0.0) for p in per),
            "steps": per[0].get("steps", 0),  # timed steps of round 1 that entered the phase
            "median_s_when_run": statistics.median(when) if when else None,
            "saved_tensors": _median_or_none(p.get("saved_tensors") for p in per),
            "saved_mb": _median_or_none(p.get("saved_mb") for p in per),
        }
    counted = rs[0].get("saved_mb") is not None
    out = {"phases": phases}
    for n in (*PHASES, OTHER):
        ph = phases.get(n)
        # a phase no timed step entered counts 0 s and 0 MB (the probe's medians count it 0 in such steps)
        out[f"{n}_s"] = ph["median_s"] if ph else 0.0
        out[f"{n}_saved_mb"] = ph["saved_mb"] if ph and counted else None
    out["saved_mb"] = statistics.median(x["saved_mb"] for x in rs) if counted else None
    out["peak_saved_mb"] = statistics.median(x["peak_saved_mb"] for x in rs) if counted else None
    return out


def _median_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def format_table(report: dict) -> str:
    cfg = report["config"]
    mem = "CUDA max allocated" if any(r.get("device") == "cuda" for r in report["results"].values()) else "peak RSS"
    width = max([14, *(len(n) + 1 for n in report["results"])])
    first = next(iter(report["results"].values()), {})
    batch = (
        f"input {'x'.join(map(str, first['input_shape']))}, {first['num_classes']} classes "
        if "input_shape" in first
        else ""
    )
    lines = [
        f"B={cfg['batch_size']} H={cfg['image_size']} C={cfg['channels']} L={cfg['layers']} in={cfg['in_channels']} "
        f"{batch}steps={cfg['steps']} (+{cfg['warmup']} warm-up) rounds={cfg['rounds']} | {report['machine']['cpu']}"
        + (f" | {report['machine']['gpu']}" if "gpu" in report["machine"] else ""),
        f"{'method':{width}s} {'step s':>8s} {'x darts':>8s} {'cpu s':>8s} {'x darts':>8s} "
        f"{'arch s':>8s} {'weight s':>8s} {'other s':>8s} "
        f"{'memory MB':>10s} {'x darts':>8s} {'step MB':>8s} {'x darts':>8s} "
        f"{'saved MB':>9s} {'x darts':>8s} {'arch MB':>8s} {'weight MB':>9s}"
        + (f" {'x derived':>9s}" if DERIVED in report["results"] else ""),
        f"(memory: {mem}; step MB: peak minus the process before its first step"
        + (
            ""
            if mem != "peak RSS" or not cfg.get("live_memory", True)
            else ", in a second process returning freed memory at once"
        )
        + "; cpu s: process CPU time;",
        " arch s / weight s / other s: median seconds per step in each phase (0 where a step has none);"
        " saved MB: tensors saved for backward per step, distinct storages, parameters excluded; arch MB /"
        " weight MB: of which in that phase"
        + ("; x derived: cpu s against the derived network's training step)" if DERIVED in report["results"] else ")"),
    ]

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    for n, r in report["results"].items():
        lines.append(
            f"{n:{width}s} {r['median_s']:8.3f} {fmt(r['time_vs_darts'], '.2f'):>8s} {r['cpu_median_s']:8.3f} "
            f"{fmt(r['cpu_time_vs_darts'], '.2f'):>8s} "
            f"{fmt(r.get('arch_s'), '.3f'):>8s} {fmt(r.get('weight_s'), '.3f'):>8s} {fmt(r.get('other_s'), '.3f'):>8s} "
            f"{r['peak_mb']:10.0f} {fmt(r['memory_vs_darts'], '.2f'):>8s} "
            f"{fmt(r['step_mb'], '.0f'):>8s} {fmt(r['step_memory_vs_darts'], '.2f'):>8s} "
            f"{fmt(r.get('saved_mb'), '.1f'):>9s} {fmt(r.get('saved_vs_darts'), '.2f'):>8s} "
            f"{fmt(r.get('arch_saved_mb'), '.1f'):>8s} {fmt(r.get('weight_saved_mb'), '.1f'):>9s}"
            + (f" {fmt(r.get('cpu_time_vs_derived'), '.2f'):>9s}" if DERIVED in report["results"] else "")
        )
    for n, why in report["skipped"].items():
        lines.append(f"{n:{width}s} skipped: {why}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Worker entry point: ``python -m diffnas.bench '{json spec}'`` prints one JSON line."""
    spec = json.loads((argv or sys.argv[1:])[0])
    if isinstance(spec, list):  # entries timed in turn in this process
        for s in spec:
            s.pop("live_memory", None)
        print(json.dumps(measure_interleaved(spec)))
        return 0
    spec.pop("method_list", None)
    spec.pop("live_memory", None)  # (the caller's choice to run a memory pass, not a measure option)
    print(json.dumps(measure(**spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
