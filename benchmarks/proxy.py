"""What the method comparisons share: the Fashion-MNIST proxy scale, the heavy-job lock, the run environment.

Proxy scale: 2000 training images at 16x16; search 4 epochs, C=8, 5 cells, batch 64;
retraining 4 epochs, C=16, 6 cells. Each comparison passes these flags to
``python -m diffnas run`` (or ``search``: the ``train.*`` keys are ignored there).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = "/tmp/diffnas-heavy.lock"  # one heavy job at a time on a shared machine
SEARCH = [
    "--subset", "2000", "--image-size", "16",
    "--set", "search.epochs=4", "--set", "search.channels=8", "--set", "search.layers=5",
    "--set", "search.batch_size=64",
]  # fmt: skip
PROXY = [*SEARCH, "--set", "train.epochs=4", "--set", "train.channels=16", "--set", "train.layers=6"]


def env() -> dict:
    """This checkout's sources, one thread per process (two threads on a busy 2-core machine spin-wait)."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def skips(genotype: dict, cell: str = "normal") -> int:
    """Skip connections among a found cell's ops: the "architecture collapse" the papers count."""
    return sum(op == "skip_connect" for op, _ in genotype[cell])
