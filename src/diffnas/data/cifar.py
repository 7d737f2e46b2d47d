"""CIFAR-10 and CIFAR-100: the python-pickle folders ``cifar-10-batches-py`` / ``cifar-100-python``.

The pickles are loaded with an unpickler that only accepts numpy arrays and plain Python data (the
globals it may name are listed in ``_PICKLE_ALLOWED``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError
from .common import Reader, as_dir, check_labels, reason

_CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

_CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "labels": "labels",
        "names": "label_names",
        "num_classes": 10,
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "labels": "fine_labels",
        "names": "fine_label_names",
        "num_classes": 100,
    },
}

# The only globals a CIFAR pickle needs: numpy array reconstruction and byte-string decoding.
_PICKLE_ALLOWED = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith("numpy.core.") and hasattr(np, "_core"):  # pickles from numpy 1.x
            module = "numpy._core." + module[len("numpy.core.") :]
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _unpickle(name: str, path: Path, what: str = "a CIFAR python pickle"):
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        OSError,
        MemoryError,
    ) as e:
        raise DataError(f"{name}: cannot read {path} ({reason(e)}); expected {what}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{name}: {path} holds a {type(obj).__name__}, expected {what} (a dict)")
    return obj


def _get(d: dict, key: str, name: str, path: Path, what: str = "a CIFAR python pickle"):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{name}: {path} has no {key!r} entry (expected {what})")


def _read_cifar_batch(name: str, path: Path, label_key: str, num_classes: int):
    d = _unpickle(name, path)
    data = np.asarray(_get(d, "data", name, path))
    labels = np.asarray(_get(d, label_key, name, path))
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{name}: {path} has data of shape {data.shape}, expected [N, 3072] (3x32x32 images)")
    if data.dtype != np.uint8:
        if data.dtype.kind not in "iu" or (data.size and (data.min() < 0 or data.max() > 255)):
            raise DataError(f"{name}: {path} has {data.dtype} data, expected bytes 0..255")
        data = data.astype(np.uint8)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{name}: {path} has labels of shape {labels.shape} / {labels.dtype}, expected a list of ints")
    if len(labels) != len(data):
        raise DataError(
            f"{name}: {path} has {len(labels)} labels for {len(data)} images (expected one label per image)"
        )
    labels = labels.astype(np.int64)
    check_labels(name, labels, num_classes, path)
    return data.reshape(-1, 3, 32, 32), labels


def load(name: str, data_dir):
    """The training and test splits of ``name`` from its pickle folder ``data_dir`` (or the folder's parent)."""
    spec = _CIFAR[name]
    files = spec["train"] + spec["test"]
    expected = f"the python-pickle folder {spec['folder']} (or its parent) with {', '.join(files)}"
    root = as_dir(name, data_dir, None, expected)
    if (root / spec["folder"]).is_dir():
        root = root / spec["folder"]
    for f in files:
        if not (root / f).is_file():
            raise DataError(f"{name}: no such file {root / f} (expected {expected}; set --data-dir)")
    n = spec["num_classes"]
    train = [_read_cifar_batch(name, root / f, spec["labels"], n) for f in spec["train"]]
    test = [_read_cifar_batch(name, root / f, spec["labels"], n) for f in spec["test"]]
    train_x = np.concatenate([b[0] for b in train])
    train_y = np.concatenate([b[1] for b in train])
    test_x = np.concatenate([b[0] for b in test])
    test_y = np.concatenate([b[1] for b in test])
    if len(train_x) == 0 or len(test_x) == 0:
        raise DataError(f"{name}: {root} holds no {'training' if len(train_x) == 0 else 'test'} images")

    meta = root / spec["meta"]
    if meta.is_file():
        names = _get(_unpickle(name, meta), spec["names"], name, meta)
        classes = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in names]
        if len(classes) != n:
            raise DataError(f"{name}: {meta} lists {len(classes)} class names, expected {n}")
    else:
        classes = list(_CIFAR10_CLASSES) if name == "cifar10" else [str(i) for i in range(n)]
    return train_x, train_y, test_x, test_y, classes


READERS = {
    "cifar10": Reader(
        load,
        "CIFAR-10, 50,000 + 10,000 colour 32x32 images in 10 classes "
        "(python-pickle folder cifar-10-batches-py; needs --data-dir)",
        aliases=("cifar-10", "cifar_10"),
    ),
    "cifar100": Reader(
        load,
        "CIFAR-100, 50,000 + 10,000 colour 32x32 images in 100 classes, fine labels "
        "(python-pickle folder cifar-100-python; needs --data-dir)",
        aliases=("cifar-100", "cifar_100"),
    ),
}
