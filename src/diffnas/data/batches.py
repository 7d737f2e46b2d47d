"""Train/val splits and deterministic, resumable batch streams over uint8 image tensors.

Shuffling uses a ``torch.Generator`` seeded from ``(seed, epoch)``, so the order of any epoch can be
recomputed from the stream's ``state_dict()``. Augmentation draws from torch's *global* CPU RNG, so
restoring ``torch.get_rng_state()`` together with the stream's state reproduces batches bit for bit.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import DataError


def split_indices(n: int, train_portion: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of ``range(n)``: the first ``round(n * train_portion)`` are train, the rest val."""
    n_train = round(n * train_portion)
    if not 0 < n_train < n:
        raise DataError(
            f"cannot split {n} training images with train_portion={train_portion}: both the train part "
            f"({n_train}) and the val part ({n - n_train}) must be non-empty (use more images or another "
            "train_portion)"
        )
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    return perm[:n_train], perm[n_train:]


@dataclass
class Augment:
    crop_padding: int = 0  # random crop with zero padding of this many pixels
    flip: bool = False  # random horizontal flip with p=0.5
    cutout: int = 0  # cutout square side length (0 = off), DARTS-style, applied after normalization


def _stats(v, device) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float32).reshape(1, -1, 1, 1).to(device)


def _normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - mean).div_(std)


def random_crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Per-sample random crops of the zero-padded batch ``x`` [B, C, H, W], back to H x W."""
    if padding <= 0:
        return x
    b, _, h, w = x.shape
    oy = torch.randint(0, 2 * padding + 1, (b,)).to(x.device)
    ox = torch.randint(0, 2 * padding + 1, (b,)).to(x.device)
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # [B, H, 1]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # [B, 1, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()  # advanced indices first: [B, H, W, C]


def random_flip(x: torch.Tensor) -> torch.Tensor:
    """Flip each image of ``x`` [B, C, H, W] horizontally with probability 0.5."""
    flip = (torch.rand(x.shape[0]) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero one ``length`` x ``length`` square per image, centred uniformly over the image, clipped at borders."""
    if length <= 0:
        return x
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,)).to(x.device)
    cx = torch.randint(0, w, (b,)).to(x.device)
    r = torch.arange(h, device=x.device)
    c = torch.arange(w, device=x.device)
    y0, x0 = cy - length // 2, cx - length // 2
    in_rows = (r[None] >= y0[:, None]) & (r[None] < (y0 + length)[:, None])  # [B, H]
    in_cols = (c[None] >= x0[:, None]) & (c[None] < (x0 + length)[:, None])  # [B, W]
    hole = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return x.masked_fill(hole, 0)


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.sha256(f"diffnas.BatchStream:{int(seed)}:{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def check_batch_size(batch_size: int, key: str, **splits: int) -> None:
    """A batch larger than a split it is drawn from would silently be a smaller batch (one per epoch)."""
    for name, n in splits.items():
        if batch_size > n:
            raise DataError(f"{key} = {batch_size} is larger than the {name.replace('_', ' ')} ({n} images)")


class BatchStream:
    """Deterministic, resumable stream of normalized (and optionally augmented) batches.

    Draws ``x_uint8[indices]`` in an order reshuffled every epoch, forever. ``state_dict()`` is
    ``{'epoch': k, 'pos': i}``: epoch ``k`` of which ``i`` batches were already taken.

    ``part=(rank, world)`` (data parallelism): ``batch_size`` is the global batch; the stream
    draws and augments the whole global batch, exactly as a single process would, and returns
    this rank's contiguous ``1/world`` of it. Every rank so consumes the RNG alike, and the
    ranks' parts together are the single-process batch.
    """

    def __init__(
        self,
        x_uint8: torch.Tensor,
        y: torch.Tensor,
        indices: torch.Tensor | Sequence[int],
        batch_size: int,
        *,
        mean,
        std,
        seed: int,
        augment: Augment | None = None,
        device: str | torch.device = "cpu",
        drop_last: bool = True,
        part: tuple[int, int] | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.x = x_uint8
        self.y = y
        self.indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1).cpu()
        n = len(self.indices)
        if n == 0:
            raise DataError("no images to draw batches from (the training split is empty)")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.augment = augment
        self.device = torch.device(device)
        self.drop_last = drop_last
        self.part = part if part is not None and part[1] > 1 else None
        if n <= self.batch_size:
            self.steps_per_epoch = 1
        elif drop_last:
            self.steps_per_epoch = n // self.batch_size
        else:
            self.steps_per_epoch = math.ceil(n / self.batch_size)
        self.mean = _stats(mean, self.device)
        self.std = _stats(std, self.device)
        self.epoch = 0
        self.pos = 0
        self._perm: torch.Tensor | None = None
        self._perm_epoch = -1

    def __len__(self) -> int:
        return self.steps_per_epoch

    def _order(self, epoch: int) -> torch.Tensor:
        if self._perm_epoch != epoch:
            g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
            self._perm = torch.randperm(len(self.indices), generator=g)
            self._perm_epoch = epoch
        return self._perm

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch: float32 [B, C, H, W] normalized images and int64 [B] labels, on ``device``."""
        if self.pos >= self.steps_per_epoch:
            self.epoch += 1
            self.pos = 0
        perm = self._order(self.epoch)
        sel = self.indices[perm[self.pos * self.batch_size : (self.pos + 1) * self.batch_size]]
        self.pos += 1
        if self.x.device.type != "cpu":
            sel = sel.to(self.x.device)
        xb = self.x[sel].to(self.device)
        yb = self.y[sel].to(self.device)
        aug = self.augment
        if aug is not None and aug.crop_padding > 0:
            xb = random_crop(xb, aug.crop_padding)
        if aug is not None and aug.flip:
            xb = random_flip(xb)
        xb = _normalize(xb, self.mean, self.std)
        if aug is not None and aug.cutout > 0:
            xb = cutout(xb, aug.cutout)
        if self.part is not None:
            rank, world = self.part
            per = len(yb) // world  # equal parts; only a global batch smaller than batch_size leaves a remainder
            if per == 0:
                raise DataError(f"a batch of {len(yb)} images cannot be split over {world} processes")
            xb, yb = xb[rank * per : (rank + 1) * per], yb[rank * per : (rank + 1) * per]
        return xb, yb

    __next__ = next

    def __iter__(self) -> BatchStream:
        return self

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, d: dict) -> None:
        epoch, pos = int(d["epoch"]), int(d["pos"])
        if epoch < 0 or not 0 <= pos <= self.steps_per_epoch:
            raise ValueError(f"bad BatchStream state {d!r} (steps_per_epoch={self.steps_per_epoch})")
        self.epoch, self.pos = epoch, pos


def eval_batches(
    x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int, *, mean, std, device: str | torch.device = "cpu"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """All samples in order, normalized, without augmentation, as (float32 x, int64 y) batches on ``device``."""
    device = torch.device(device)
    m, s = _stats(mean, device), _stats(std, device)
    for i in range(0, len(y), batch_size):
        xb = x_uint8[i : i + batch_size].to(device)
        yield _normalize(xb, m, s), y[i : i + batch_size].to(device)
