"""The baselines every search is compared against: a random architecture, and random search with weight sharing.

- ``random``: one uniformly random architecture of the space (``SearchSpace.random_architecture``),
  drawn from ``random.Random(seed)``; nothing is trained. The floor.
- ``rsws`` (Li & Talwalkar, UAI 2019): every step trains the supernet's weights on one
  uniformly random architecture (single path: only its ops run and get gradients), no
  architecture parameters. At the end of every epoch it draws ``rsws.samples`` random
  architectures, scores each with the shared weights on the same ``rsws.eval_batches`` val
  batches, and the best is the epoch's architecture (so the search path can be followed
  epoch by epoch). Both draw from one generator seeded by the run's seed, checkpointed.
"""

from __future__ import annotations

import random

import torch

from ..errors import ConfigError
from ..runtime.distributed import sum_values
from .base import SearchMethod


class RandomArchitecture(SearchMethod):
    name = "random"
    help = "baseline: a uniformly random architecture of the space (seeded), no search"
    relaxation = "single-path"
    requires = frozenset({"single-path"})
    trains = False  # the engine runs no steps: the architecture is drawn when the method is built

    def __init__(self, cfg, space, in_channels: int, num_classes: int, device):
        super().__init__(cfg, space, in_channels, num_classes, device)
        self.rng = random.Random(cfg.seed)
        self.relax.use(space.random_architecture(self.rng))

    def updates(self, batch, val_batches, arch_due: bool) -> dict:
        return {}  # nothing moves (the engine runs no steps for it)

    def epoch_end(self) -> None:
        if self.trains:  # no learning-rate step without a weight step
            super().epoch_end()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.rng.setstate(state["rng"])


class RandomSearchWS(RandomArchitecture):
    name = "rsws"
    help = "random search with weight sharing: single-path supernet training, best of K random architectures"
    trains = True
    # K = 100 architectures, as NAS-Bench-201's RSPS baseline (select_num); all scored on the same val batches
    options = {"samples": 100, "eval_batches": 1}

    def __init__(self, cfg, space, in_channels: int, num_classes: int, device):
        for key in ("samples", "eval_batches"):
            value = cfg[self.name][key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{self.name}.{key} must be a positive integer, got {value!r}")
        super().__init__(cfg, space, in_channels, num_classes, device)
        self.ranked: list[dict] = []

    def updates(self, batch, val_batches, arch_due: bool) -> dict:
        """A weight step on a fresh random architecture; after the epoch's last step, the ranking."""
        self.relax.use(self.space.random_architecture(self.rng))
        with self.phase("weight"):
            record = self.weight_step(batch)
        if self.step_in_epoch + 1 == self.steps_per_epoch:
            self.ranked = self.rank([val_batches.next() for _ in range(self.opts.eval_batches)])
        return record

    @torch.no_grad()
    def rank(self, batches) -> list[dict]:
        """Score ``rsws.samples`` random architectures on ``batches`` with the shared weights; ``use`` the best
        (the first drawn among equals). Returns every one scored: architecture string and metric."""
        task = self.space.task
        scored = []
        for _ in range(self.opts.samples):
            arch = self.space.random_architecture(self.rng)
            self.relax.use(arch)
            sums = task.evaluate(self.net, batches)
            loss, correct, n = sum_values([sums["loss"], sums.get(task.metric, 0.0), sums["n"]])  # every rank's part
            means = {"val_loss": loss / max(n, 1), f"val_{task.metric}": correct / max(n, 1)}
            scored.append((task.summarize(means, "val")[f"val_{task.metric}"], arch))
        sign = 1 if task.higher_is_better else -1
        best = max(scored, key=lambda s: sign * s[0])[1]  # max keeps the first of equals
        self.relax.use(best)
        return [{"architecture": str(a), f"val_{task.metric}": v} for v, a in scored]

    def epoch_record(self) -> dict:
        if not self.ranked:
            return {}
        key = f"val_{self.space.task.metric}"
        best = max if self.space.task.higher_is_better else min
        return {f"ranked_best_{key}": best(r[key] for r in self.ranked), "ranked": self.ranked}
