"""The CPU thread policy, set before torch starts its OpenMP runtime (see README, "Threads").

OpenMP threads that wait for work by spinning hold their core; beside another busy process
on a small machine, a spinning thread steals the core the busy thread needs and every
parallel region waits for the slowest thread. Passive waiting (threads sleep at once) costs
nothing measurable when the machine is quiet and bounds the slowdown when it is not.
libgomp reads ``OMP_WAIT_POLICY`` when it loads, so this module must not import torch and
``apply_policy`` runs before torch is imported (``diffnas/__init__.py``). A variable the
user set is kept; ``DIFFNAS_THREADS=off`` leaves everything as torch would have it.
"""

from __future__ import annotations

import os

# libgomp (torch's OpenMP) and Intel's OpenMP (MKL): sleep at once instead of spinning for a while
WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def apply_policy() -> None:
    """Set the OpenMP wait policy (unless the user set one); idempotent, torch-free."""
    if os.environ.get("DIFFNAS_THREADS", "").lower() == "off":
        return
    for key, value in WAIT_POLICY.items():
        os.environ.setdefault(key, value)
