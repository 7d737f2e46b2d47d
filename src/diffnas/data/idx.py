"""MNIST and Fashion-MNIST: the four standard IDX files, gzip-compressed or not.

The IDX header (magic number, dimensions) is checked against the file's size, so a truncated
download is reported as such instead of surfacing as a reshape error.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .common import Reader, as_dir, check_labels, check_same_size, reason

_DEFAULT_DIRS = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist/",
    "mnist": "/usr/share/datasets/mnist/",
}

_CLASSES = {
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "mnist": [str(i) for i in range(10)],
}

_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _find_file(name: str, root: Path, base: str) -> Path:
    for candidate in (root / f"{base}.gz", root / base):
        if candidate.is_file():
            return candidate
    raise DataError(f"{name}: no such file {root / (base + '.gz')} (expected the IDX files of {name}; set --data-dir)")


def read_idx(path: Path, ndim: int, name: str = "idx") -> np.ndarray:
    """Read an unsigned-byte IDX file (``.gz`` or raw) with ``ndim`` dimensions, checking its header."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(
            f"{name}: cannot read {path} ({reason(e)}); expected a complete IDX file, the file may be truncated "
            "or corrupt"
        ) from None
    kind = "image" if ndim == 3 else "label"
    expected_magic = 0x0800 + ndim
    if len(data) < 4:
        raise DataError(f"{name}: {path} is too short to be an IDX {kind} file ({len(data)} bytes)")
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected_magic:
        raise DataError(
            f"{name}: {path} is not an IDX {kind} file (magic number {magic:#010x}, expected {expected_magic:#010x})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: {path} ends inside its IDX header ({len(data)} bytes, expected at least {header})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    want = header + math.prod(dims)
    if len(data) != want:
        raise DataError(
            f"{name}: {path} has {len(data)} bytes but its IDX header (dims {'x'.join(map(str, dims))}) "
            f"says {want}; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def load(name: str, data_dir):
    """The training and test splits of ``name`` from the IDX files in ``data_dir`` (default: its system folder)."""
    expected = f"the IDX files of {name}: {', '.join(b + '.gz' for b in _FILES)}"
    root = as_dir(name, data_dir, _DEFAULT_DIRS[name], expected)
    paths = [_find_file(name, root, base) for base in _FILES]
    classes = _CLASSES[name]
    splits = []
    for img_path, lab_path in (paths[0:2], paths[2:4]):
        images = read_idx(img_path, 3, name)
        labels = read_idx(lab_path, 1, name).astype(np.int64)
        if len(labels) != len(images):
            raise DataError(
                f"{name}: {lab_path} has {len(labels)} labels but {img_path} has {len(images)} images "
                "(expected one label per image)"
            )
        if len(images) == 0:
            raise DataError(f"{name}: {img_path} holds no images")
        check_labels(name, labels, len(classes), lab_path)
        splits.append((images[:, None], labels))
    (train_x, train_y), (test_x, test_y) = splits
    check_same_size(name, train_x, test_x, paths[0], paths[2])
    return train_x, train_y, test_x, test_y, classes


READERS = {
    "fashion-mnist": Reader(
        load,
        "Fashion-MNIST, 60,000 + 10,000 grayscale 28x28 clothing images in 10 classes "
        "(IDX files; default /usr/share/datasets/fashion-mnist)",
        aliases=("fashion_mnist", "fashionmnist"),
    ),
    "mnist": Reader(
        load,
        "MNIST, 60,000 + 10,000 grayscale 28x28 handwritten digits in 10 classes "
        "(IDX files; default /usr/share/datasets/mnist)",
        flip=False,  # a mirrored digit is another digit, or none
    ),
}
