"""Loading a data set by name: the name -> reader table, then what every format gets alike.

Each format module (:mod:`.idx`, :mod:`.cifar`, :mod:`.imagefolder`) lists its data sets in its
``READERS``; adding a format is adding a module and naming it in :data:`READERS` here. Whatever the
format, :func:`load_dataset` then takes the training subset, resizes, and computes the normalization
statistics, and returns an :class:`ImageDataset`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError, did_you_mean
from . import cifar, idx, imagefolder, nb201
from .common import Reader


@dataclass
class ImageDataset:
    """An image classification data set held in memory as uint8 tensors."""

    name: str
    train_x: torch.Tensor  # uint8 [N, C, H, W]
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor  # uint8 [M, C, H, W]
    test_y: torch.Tensor  # int64 [M]
    classes: list[str]
    flip: bool  # horizontal flip is a valid augmentation
    mean: torch.Tensor  # float [C], per-channel mean of train_x in [0, 1] scale
    std: torch.Tensor  # float [C]

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[2])


READERS: dict[str, Reader] = {**idx.READERS, **cifar.READERS, **nb201.READERS, **imagefolder.READERS}
DATASETS: dict[str, str] = {name: reader.description for name, reader in READERS.items()}
_ALIASES = {alias: name for name, reader in READERS.items() for alias in reader.aliases}


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: int | None = None,
    subset: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """Load a data set by name (see :data:`DATASETS`).

    ``subset=N`` keeps N training images chosen at random with ``seed`` (the test set is untouched);
    ``image_size=S`` resizes every image to S x S once, here. ``mean``/``std`` are computed from the
    resulting training images.
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise DataError(
            f"unknown data set {name!r}{did_you_mean(key, DATASETS)} (expected one of: {', '.join(DATASETS)})"
        )
    if subset is not None and (not isinstance(subset, int) or isinstance(subset, bool) or subset < 1):
        raise DataError(f"{key}: subset must be a positive number of training images, got {subset!r}")
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1):
        raise DataError(f"{key}: image_size must be a positive number of pixels, got {image_size!r}")

    reader = READERS[key]
    *arrays, classes = reader.load(key, data_dir)
    train_x, train_y, test_x, test_y = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    if subset is not None and subset > len(train_y):
        raise DataError(f"{key}: subset {subset} is more than the {len(train_y)} training images there are")
    if subset is not None and subset < len(train_y):
        g = torch.Generator().manual_seed(int(seed))
        keep = torch.randperm(len(train_y), generator=g)[:subset].sort().values
        train_x, train_y = train_x[keep], train_y[keep]
    if image_size is not None:
        train_x = _resize(train_x, image_size)
        test_x = _resize(test_x, image_size)
    mean, std = _channel_stats(train_x)
    return ImageDataset(key, train_x, train_y, test_x, test_y, list(classes), reader.flip, mean, std)


def _resize(x: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Resize uint8 images to size x size (bilinear, antialiased), rounding back to uint8."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, x.shape[0], chunk):
        r = F.interpolate(
            x[i : i + chunk].float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        out[i : i + chunk] = r.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and (population) std of uint8 images, in [0, 1] scale, via histograms."""
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        n = hist.sum().clamp_min(1.0)
        m = (hist * values).sum() / n
        var = ((hist * (values - m) ** 2).sum() / n).clamp_min(0.0)
        s = var.sqrt() / 255.0
        means.append(m / 255.0)
        stds.append(s if s > 0 else torch.tensor(1.0, dtype=torch.float64))  # constant channel: do not divide by 0
    return torch.stack(means).float(), torch.stack(stds).float()
