"""Small builders shared by the tests: tiny configs, supernets and batches."""

from __future__ import annotations

import torch

from diffnas.config import resolve
from diffnas.methods import build_method
from diffnas.spaces import get_space


def tiny_config(method="darts", **overrides):
    search = {"channels": 4, "layers": 3, "batch_size": 8, "epochs": 2}
    search.update(overrides.pop("search", {}))
    return resolve(method, overrides={"search": search, **overrides})


def tiny_method(method="darts", space="darts", in_channels=1, num_classes=3, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = tiny_config(method, space=space, **overrides)
    return build_method(cfg, get_space(space, cfg.search.nodes), in_channels, num_classes, "cpu")


def batch(n=8, channels=1, size=8, classes=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)


class FixedBatches:
    """A val stream that always returns the same batch."""

    def __init__(self, b):
        self.b = b

    def next(self):
        return self.b
