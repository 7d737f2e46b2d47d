"""The machine a run is on and what it used: the CPU model, peak memory (CUDA max allocated or peak RSS), and
how many CPU threads a run takes."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

DEFAULT_THREADS = torch.get_num_threads()  # torch's choice (one per core), before any run changed it


def free_cores(sample_s: float = 0.2) -> float | None:
    """How many cores are idle right now (``/proc/stat`` over ``sample_s``); None where that is unknown."""

    def idle_total():
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return values[3] + values[4], sum(values)  # idle + iowait, all

    try:
        idle0, total0 = idle_total()
        time.sleep(sample_s)
        idle1, total1 = idle_total()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (idle1 - idle0) / (total1 - total0) * (os.cpu_count() or 1)


def choose_threads(before: int | None = None) -> int:
    """The intra-op threads of a CPU run: the cores free when it starts (at least 1, at most torch's
    default), or ``before``, the count a resumed run started with (another count rounds sums in another
    order: a resumed run stays the same run). A thread without a core of its own stalls every parallel
    region it is part of: beside one busy process on 2 cores, 2 threads ran 3.6x slower than 1 (README,
    Threads). ``OMP_NUM_THREADS`` (or ``DIFFNAS_THREADS=off``) keeps the user's or torch's count."""
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("DIFFNAS_THREADS", "").lower() == "off":
        return torch.get_num_threads()
    if before is None:
        free = free_cores()
        before = DEFAULT_THREADS if free is None else max(1, min(DEFAULT_THREADS, round(free)))
    torch.set_num_threads(before)
    return before


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb(device=None) -> float:
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def file_pages_mb() -> float:
    """MB of this process's resident pages that map files (Linux; 0 elsewhere): mostly the code of the
    libraries a process has run so far. Shared and evictable, counted in RSS but held by no tensor."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssFile:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def cpu_model() -> str:
    """The CPU's model name (what a latency table or a benchmark was measured on)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
