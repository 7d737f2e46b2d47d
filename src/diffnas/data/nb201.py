"""The NAS-Bench-201 data sets beside plain CIFAR: ImageNet16-120 and the benchmark's CIFAR-10 split.

- ``imagenet16-120``: the downsampled ImageNet at 16x16 (Chrabaszcz et al. 2017) as the
  benchmark reads it: python pickles ``train_data_batch_1`` .. ``_10`` and ``val_data``
  (``data`` [N, 768] bytes, ``labels`` 1..1000), keeping classes 1-120 (as labels 0-119):
  151,700 training and 6,000 test images.
- ``cifar10-valid``: the CIFAR-10 training set split as the benchmark's ``cifar-split.txt``
  says (25,000 train / 25,000 valid; the valid half is the test split here), the split the
  benchmark's ``cifar10-valid`` accuracies and its DARTS search use. The file (from
  NAS-Bench-201's ``configs/nas-benchmark/``) goes beside the CIFAR-10 pickles.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DataError
from . import cifar
from .common import Reader, as_dir

IN16_TRAIN = [f"train_data_batch_{i}" for i in range(1, 11)]
IN16_TEST = ["val_data"]
IN16_CLASSES = 120
_IN16 = "an ImageNet16 python pickle"


def _in16_batch(name: str, path: Path):
    d = cifar._unpickle(name, path, _IN16)
    data = np.asarray(cifar._get(d, "data", name, path, _IN16))
    labels = np.asarray(cifar._get(d, "labels", name, path, _IN16))
    if data.ndim != 2 or data.shape[1] != 3 * 16 * 16 or data.dtype != np.uint8:
        raise DataError(f"{name}: {path} has {data.dtype} data of shape {data.shape}, expected [N, 768] bytes")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise DataError(f"{name}: {path} has {labels.shape} {labels.dtype} labels for {len(data)} images")
    keep = (labels >= 1) & (labels <= IN16_CLASSES)
    return data[keep].reshape(-1, 3, 16, 16), labels[keep].astype(np.int64) - 1


def load_imagenet16(name: str, data_dir):
    expected = f"the ImageNet16 folder (or its parent) with {', '.join(IN16_TRAIN[:1])} .. _10 and val_data"
    root = as_dir(name, data_dir, None, expected)
    if (root / "ImageNet16").is_dir():
        root = root / "ImageNet16"
    for f in IN16_TRAIN + IN16_TEST:
        if not (root / f).is_file():
            raise DataError(f"{name}: no such file {root / f} (expected {expected}; set --data-dir)")
    train = [_in16_batch(name, root / f) for f in IN16_TRAIN]
    test = [_in16_batch(name, root / f) for f in IN16_TEST]
    train_x, train_y = np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])
    test_x, test_y = np.concatenate([b[0] for b in test]), np.concatenate([b[1] for b in test])
    if len(train_y) == 0 or len(test_y) == 0:
        raise DataError(f"{name}: {root} holds no images of classes 1-{IN16_CLASSES}")
    return train_x, train_y, test_x, test_y, [str(i) for i in range(1, IN16_CLASSES + 1)]


def read_split(name: str, path: Path, n: int) -> dict:
    """A NAS-Bench-201 split file: ``{"train": ["int", ["0", ...]], "valid": [...]}`` -> index arrays."""
    try:
        raw = json.loads(path.read_text())
        out = {k: np.asarray([int(i) for i in v[1]], dtype=np.int64) for k, v in raw.items()}
    except (OSError, ValueError, TypeError, IndexError, AttributeError) as e:
        raise DataError(f"{name}: cannot read the split file {path} ({type(e).__name__}: {e})") from None
    for k, idx in out.items():
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise DataError(f"{name}: {path} names image {int(idx.max())} in {k!r}; the data set has {n}")
    return out


def load_cifar10_valid(name: str, data_dir):
    train_x, train_y, _, _, classes = cifar.load("cifar10", data_dir)
    root = Path(data_dir).expanduser()
    candidates = [root / "cifar-split.txt", root.parent / "cifar-split.txt"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DataError(
            f"{name}: no cifar-split.txt in {root} or its parent "
            "(NAS-Bench-201's configs/nas-benchmark/cifar-split.txt)"
        )
    split = read_split(name, path, len(train_y))
    if "train" not in split or "valid" not in split:
        raise DataError(f"{name}: {path} needs a 'train' and a 'valid' list")
    t, v = split["train"], split["valid"]
    return train_x[t], train_y[t], train_x[v], train_y[v], classes


READERS = {
    "imagenet16-120": Reader(
        load_imagenet16,
        "ImageNet16-120, 151,700 + 6,000 colour 16x16 images in 120 classes (NAS-Bench-201's downsampled "
        "ImageNet pickles train_data_batch_1..10, val_data; needs --data-dir)",
        aliases=("imagenet16", "imagenet16_120"),
    ),
    "cifar10-valid": Reader(
        load_cifar10_valid,
        "CIFAR-10's training set split 25,000 / 25,000 by NAS-Bench-201's cifar-split.txt (the valid half as the "
        "test split; the pickles and the split file; needs --data-dir)",
    ),
}
