"""RARTS's latency penalty, eq. (5)/(8): weight * <softmax(alpha), Lat>.

``Lat`` has alpha's shape per cell type: ``Lat[t][e, o]`` is the latency of op ``o``
at edge ``e``'s input shape, summed over the supernet's cells of type ``t`` (the
model latency approximated as the sum of its ops' latencies, as the paper does after
FasterSeg). The latencies are measured on the device the search runs on by a small
micro-benchmark of each op at each distinct shape (inference: eval mode, no grad,
batch ``batch``, median of ``repeats`` runs after ``warmup``), in milliseconds, and
cached in ``~/.cache/diffnas/latency-<hash>.json`` (``$DIFFNAS_CACHE`` overrides),
the hash keyed by device, torch version, thread count and batch. ``none`` costs 0.

Configured as ``reg.latency: WEIGHT`` (the paper's CIFAR search: 0.002, the weight
``--reg latency`` gets without a value) or
``reg.latency: {weight: W, batch: 1, repeats: 20, warmup: 3, cache: true}``. The op
weights are the relaxation's (``softmax(alpha)`` for DARTS-style relaxations).

The table is built on the first penalty, from the shapes the supernet says its edges
see (``net.edge_shapes``) at the shape of the data the method searches on
(``method.input_shape``). ``Latency.timer`` is the
micro-benchmark, ``(op_name, channels, height, width, stride, batch, device) -> ms``;
tests replace it.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from pathlib import Path

import torch

from ..errors import ConfigError
from ..runtime.distributed import all_reduce_mean
from ..runtime.system import cpu_model
from ..spaces import OPS
from . import Regularizer, register


def cache_dir() -> Path:
    env = os.environ.get("DIFFNAS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "diffnas"


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"{device.type}:{cpu_model()}"


def time_op(name: str, c: int, h: int, w: int, stride: int, batch: int = 1, device="cpu", repeats=20, warmup=3):
    """Median milliseconds of one inference forward of op ``name`` at input (batch, c, h, w)."""
    if name == "none":
        return 0.0
    op = OPS[name](c, stride, False).to(device).eval()
    x = torch.randn(batch, c, h, w, device=device)
    cuda = torch.device(device).type == "cuda"
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            op(x)
            if cuda:
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@register
class Latency(Regularizer):
    name = "latency"
    requires = frozenset({"edge-shapes"})
    timer = staticmethod(time_op)

    def __init__(self, options, space):
        super().__init__(options, space)
        if options is True:  # `--reg latency` without a weight: the paper's
            options = {}
        opts = {"weight": options} if not isinstance(options, dict) else dict(options)
        unknown = set(opts) - {"weight", "batch", "repeats", "warmup", "cache"}
        if unknown:
            raise ConfigError(f"reg.latency: unknown option(s) {', '.join(sorted(unknown))}")
        try:
            self.weight = float(opts.get("weight", 0.002))
        except (TypeError, ValueError):
            raise ConfigError(f"reg.latency: weight must be a number, got {opts.get('weight')!r}") from None
        self.batch = int(opts.get("batch", 1))
        self.repeats = int(opts.get("repeats", 20))
        self.warmup = int(opts.get("warmup", 3))
        self.use_cache = bool(opts.get("cache", True))
        self.table: dict | None = None
        self.measured = 0  # micro-benchmarks run (not read from the cache)

    # -- the table --------------------------------------------------------------------------
    def cache_file(self, device) -> Path:
        key = json.dumps([device_name(device), torch.__version__, torch.get_num_threads(), self.batch])
        return cache_dir() / f"latency-{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"

    def build_table(self, net, input_shape, device) -> dict:
        path = self.cache_file(device)
        cache = {}
        if self.use_cache and path.is_file():
            try:
                cache = json.loads(path.read_text())
            except (OSError, ValueError):
                cache = {}
        new = False
        table = {t: torch.zeros(*self.space.alpha_shape(t)) for t in self.space.cell_types}
        for cell_type, shapes in net.edge_shapes(input_shape):
            for e, (c, h, w, stride) in enumerate(shapes):
                for o, op in enumerate(self.space.ops[cell_type]):
                    key = f"{op}|{c}|{h}|{w}|{stride}"
                    if key not in cache:
                        cache[key] = 0.0 if op == "none" else float(self._measure(op, c, h, w, stride, device))
                        new = True
                    table[cell_type][e, o] += cache[key]
        if new and self.use_cache:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps(cache, indent=0, sort_keys=True))
                tmp.replace(path)
            except OSError:  # a read-only cache only costs time
                pass
        return table

    def _measure(self, op, c, h, w, stride, device) -> float:
        self.measured += 1
        return self.timer(op, c, h, w, stride, self.batch, device, self.repeats, self.warmup)

    def ensure_table(self, method) -> dict:
        if self.table is None:
            shape = method.input_shape
            if shape is None:
                raise ConfigError("reg.latency needs the shape of the data: the method has seen no batch yet")
            device = next(method.net.parameters()).device
            table = self.build_table(method.net, shape, device)
            # each rank of a multi-process run measures its own device: they share the mean table
            means = all_reduce_mean([table[t] for t in self.space.cell_types])
            self.table = {t: v.to(device) for t, v in zip(self.space.cell_types, means)}
        return self.table

    # -- the penalty ------------------------------------------------------------------------
    def latency(self, method) -> torch.Tensor:
        """<op weights, Lat> summed over cell types: the expected latency of the supernet, in ms."""
        table = self.ensure_table(method)
        return sum((method.relax.weights(t) * table[t]).sum() for t in self.space.cell_types)

    def penalty(self, method) -> torch.Tensor:
        return self.weight * self.latency(method)

    def state_dict(self) -> dict:
        return {"table": None if self.table is None else {t: v.cpu() for t, v in self.table.items()}}

    def load_state_dict(self, state: dict) -> None:
        table = state.get("table")
        self.table = None if table is None else dict(table)
