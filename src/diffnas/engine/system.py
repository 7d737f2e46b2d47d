"""Peak memory of this process: CUDA's max allocated, or the CPU process's peak RSS."""

from __future__ import annotations

import resource
import sys

import torch


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb(device=None) -> float:
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024
