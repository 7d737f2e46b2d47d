"""Small builders shared by the tests: tiny configs, supernets and batches."""

from __future__ import annotations

import torch

from diffnas.catalog import resolve
from diffnas.methods import build_method
from diffnas.spaces import space_from_config


def tiny_config(method="darts", **overrides):
    search = {"channels": 4, "layers": 3, "batch_size": 8, "epochs": 2}
    search.update(overrides.pop("search", {}))
    return resolve(method, overrides={"search": search, **overrides})


def tiny_method(method="darts", space="darts", in_channels=1, num_classes=3, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = tiny_config(method, space=space, **overrides)
    return build_method(cfg, space_from_config(cfg), in_channels, num_classes, "cpu")


def batch(n=8, channels=1, size=8, classes=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)


class FixedBatches:
    """A val stream that always returns the same batch."""

    def __init__(self, b):
        self.b = b

    def next(self):
        return self.b


def write_fake_idx(root, n_train=96, n_test=32, size=8, classes=3, seed=0, corrupt=False):
    """A tiny, learnable Fashion-MNIST look-alike in IDX .gz files: class k is brightest in stripe k."""
    import gzip
    import struct
    from pathlib import Path

    import numpy as np

    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    def images(n):
        y = rng.integers(0, classes, n).astype(np.uint8)
        x = rng.integers(0, 100, (n, size, size)).astype(np.uint8)
        stripe = size // classes
        for i, k in enumerate(y):
            x[i, k * stripe : (k + 1) * stripe] += 150
        return x, y

    def idx(arr):
        return struct.pack(">I", 0x0800 + arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()

    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x, y = images(n)
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx(x)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(y)))
    if corrupt:
        path = root / "train-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return root


def count_forward_calls(monkeypatch, cls) -> dict:
    """Patch ``cls.forward`` to count its calls: ``calls["n"]`` (proof that an op was or was not run)."""
    calls = {"n": 0}
    orig = cls.forward

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return orig(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", counting)
    return calls
