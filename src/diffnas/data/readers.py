"""Readers for the image data sets diffnas searches and trains on.

Every reader returns uint8 images ``[N, C, H, W]`` and int64 labels. Problems with the user's files
raise :class:`diffnas.errors.DataError` with a one-line message that names the file or folder and
says what was expected there.

Formats:

* ``fashion-mnist`` / ``mnist``: the four standard IDX files (gzip-compressed or not).
* ``cifar10`` / ``cifar100``: the python-pickle folders ``cifar-10-batches-py`` / ``cifar-100-python``.
  The pickles are loaded with an unpickler that only accepts numpy arrays and plain Python data.
* ``imagefolder``: ``DIR/train/<class>/*.png`` (or jpg, jpeg, bmp, gif, webp) and ``DIR/test/<class>/...``.
  Decoded arrays are cached in ``~/.cache/diffnas/`` (or ``$DIFFNAS_CACHE``), keyed by the file list,
  sizes and modification times.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import multiprocessing
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError


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


DATASETS: dict[str, str] = {
    "fashion-mnist": "Fashion-MNIST, 60,000 + 10,000 grayscale 28x28 clothing images in 10 classes "
    "(IDX files; default /usr/share/datasets/fashion-mnist)",
    "mnist": "MNIST, 60,000 + 10,000 grayscale 28x28 handwritten digits in 10 classes "
    "(IDX files; default /usr/share/datasets/mnist)",
    "cifar10": "CIFAR-10, 50,000 + 10,000 colour 32x32 images in 10 classes "
    "(python-pickle folder cifar-10-batches-py; needs --data-dir)",
    "cifar100": "CIFAR-100, 50,000 + 10,000 colour 32x32 images in 100 classes, fine labels "
    "(python-pickle folder cifar-100-python; needs --data-dir)",
    "imagefolder": "your own images: DIR/train/<class>/*.png|jpg|jpeg|bmp|gif|webp and DIR/test/<class>/... "
    "(all one size; needs --data-dir)",
}

_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
    "cifar-100": "cifar100",
    "cifar_100": "cifar100",
    "image-folder": "imagefolder",
    "image_folder": "imagefolder",
}

_IDX_DEFAULT_DIRS = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist/",
    "mnist": "/usr/share/datasets/mnist/",
}

_IDX_CLASSES = {
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

_CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


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
        raise DataError(f"unknown data set {name!r} (expected one of: {', '.join(DATASETS)})")
    if subset is not None and (not isinstance(subset, int) or isinstance(subset, bool) or subset < 1):
        raise DataError(f"{key}: subset must be a positive number of training images, got {subset!r}")
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1):
        raise DataError(f"{key}: image_size must be a positive number of pixels, got {image_size!r}")

    if key in _IDX_DEFAULT_DIRS:
        train_x, train_y, test_x, test_y, classes = _load_idx_dataset(key, data_dir)
        flip = key != "mnist"
    elif key in _CIFAR:
        train_x, train_y, test_x, test_y, classes = _load_cifar(key, data_dir)
        flip = True
    else:
        train_x, train_y, test_x, test_y, classes = _load_imagefolder(data_dir)
        flip = True

    if subset is not None and subset < len(train_y):
        g = torch.Generator().manual_seed(int(seed))
        keep = torch.randperm(len(train_y), generator=g)[:subset].sort().values
        train_x, train_y = train_x[keep], train_y[keep]
    if image_size is not None:
        train_x = _resize(train_x, image_size)
        test_x = _resize(test_x, image_size)
    mean, std = _channel_stats(train_x)
    return ImageDataset(key, train_x, train_y, test_x, test_y, list(classes), flip, mean, std)


# ----------------------------------------------------------------------------------------------------------
# shared helpers


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


def _check_labels(name: str, labels: np.ndarray, num_classes: int, where: Path | str) -> None:
    if labels.size == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise DataError(f"{name}: label {bad} out of range in {where} (expected labels 0..{num_classes - 1})")


def _check_same_size(name: str, train_x: np.ndarray, test_x: np.ndarray, train_src, test_src) -> None:
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"{name}: test images in {test_src} have shape {tuple(test_x.shape[1:])} but training images in "
            f"{train_src} have {tuple(train_x.shape[1:])} (expected one image shape)"
        )


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _as_dir(name: str, data_dir, default: str | None, expected: str) -> Path:
    if data_dir is None or str(data_dir) == "":
        if default is None:
            raise DataError(f"{name}: no data folder given (expected {expected}; set --data-dir)")
        data_dir = default
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DataError(f"{name}: no such folder {path} (expected {expected}; set --data-dir)")
    if not path.is_dir():
        hint = "; extract the archive first" if path.name.endswith((".tar.gz", ".tgz", ".tar", ".zip")) else ""
        raise DataError(f"{name}: {path} is not a folder (expected {expected}{hint}; set --data-dir)")
    return path


# ----------------------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _find_idx_file(name: str, root: Path, base: str) -> Path:
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
            f"{name}: cannot read {path} ({_reason(e)}); expected a complete IDX file, the file may be truncated "
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


def _load_idx_dataset(name: str, data_dir):
    expected = f"the IDX files of {name}: {', '.join(b + '.gz' for b in _IDX_FILES)}"
    root = _as_dir(name, data_dir, _IDX_DEFAULT_DIRS[name], expected)
    paths = [_find_idx_file(name, root, base) for base in _IDX_FILES]
    classes = _IDX_CLASSES[name]
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
        _check_labels(name, labels, len(classes), lab_path)
        splits.append((images[:, None], labels))
    (train_x, train_y), (test_x, test_y) = splits
    _check_same_size(name, train_x, test_x, paths[0], paths[2])
    return (
        torch.from_numpy(train_x),
        torch.from_numpy(train_y),
        torch.from_numpy(test_x),
        torch.from_numpy(test_y),
        classes,
    )


# ----------------------------------------------------------------------------------------------------------
# CIFAR python pickles

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


def _unpickle(name: str, path: Path):
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
        raise DataError(f"{name}: cannot read {path} ({_reason(e)}); expected a CIFAR python pickle") from None
    if not isinstance(obj, dict):
        raise DataError(f"{name}: {path} holds a {type(obj).__name__}, expected a CIFAR python pickle (a dict)")
    return obj


def _get(d: dict, key: str, name: str, path: Path):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{name}: {path} has no {key!r} entry (expected a CIFAR python pickle)")


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
    _check_labels(name, labels, num_classes, path)
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(name: str, data_dir):
    spec = _CIFAR[name]
    files = spec["train"] + spec["test"]
    expected = f"the python-pickle folder {spec['folder']} (or its parent) with {', '.join(files)}"
    root = _as_dir(name, data_dir, None, expected)
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
    return (
        torch.from_numpy(train_x),
        torch.from_numpy(train_y),
        torch.from_numpy(test_x),
        torch.from_numpy(test_y),
        classes,
    )


# ----------------------------------------------------------------------------------------------------------
# image folders

_CACHE_VERSION = "diffnas-imagefolder-v1"
_POOL_MIN_FILES = 4096  # below this, decode in-process


def cache_dir() -> Path:
    """Where decoded image folders are cached: ``$DIFFNAS_CACHE`` or ``~/.cache/diffnas``."""
    env = os.environ.get("DIFFNAS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "diffnas"


def _decode_image(path: str) -> np.ndarray:
    """Decode one image: [H, W] uint8 if its mode is 'L', else [H, W, 3] RGB. DataError if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode == "L":
                return np.asarray(im, dtype=np.uint8).copy()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError, DecompressionBombError)
        raise DataError(f"imagefolder: cannot read image {path} ({_reason(e)}); expected a readable image") from None


def _decode_chunk(paths: list[str]) -> list[np.ndarray]:
    return [_decode_image(p) for p in paths]


def _workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def _decode_all(paths: list[str]) -> list[np.ndarray]:
    workers = _workers()
    if len(paths) < _POOL_MIN_FILES or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return _decode_chunk(paths)
    step = max(256, math.ceil(len(paths) / (workers * 8)))
    chunks = [paths[i : i + step] for i in range(0, len(paths), step)]
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_decode_chunk, chunks)
    except DataError:
        raise
    except (OSError, multiprocessing.ProcessError):  # no processes allowed here: decode in-process
        return _decode_chunk(paths)
    return [a for part in parts for a in part]


def _list_split(split_dir: Path, classes: list[str]):
    """Image files of each class folder under split_dir: ([(path, label)], hash lines)."""
    items, lines = [], []
    for label, cls in enumerate(classes):
        folder = split_dir / cls
        try:
            with os.scandir(folder) as it:
                entries = [
                    e
                    for e in it
                    if not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file()
                ]
            entries.sort(key=lambda e: e.name)
            stats = [e.stat() for e in entries]
        except OSError as e:
            raise DataError(f"imagefolder: cannot list {folder} ({_reason(e)}); expected a readable folder") from None
        if not entries:
            raise DataError(
                f"imagefolder: class folder {folder} has no images (expected *{', *'.join(IMAGE_EXTENSIONS)})"
            )
        for e, st in zip(entries, stats, strict=True):
            items.append((e.path, label))
            lines.append(f"{split_dir.name}/{cls}/{e.name}\t{st.st_size}\t{st.st_mtime_ns}\n")
    return items, lines


def _class_dirs(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise DataError(f"imagefolder: cannot list {folder} ({_reason(e)}); expected a readable folder") from None


def _load_cache(path: Path, n_train: int, n_test: int, classes: list[str]):
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:  # our own handle: closed on errors too
            arrays = {k: z[k] for k in ("train_x", "train_y", "test_x", "test_y", "classes")}
    except Exception:  # missing, truncated or otherwise corrupt: rebuild
        return None
    ok = (
        arrays["train_x"].dtype == np.uint8
        and arrays["train_x"].ndim == 4
        and arrays["test_x"].dtype == np.uint8
        and arrays["test_x"].shape[1:] == arrays["train_x"].shape[1:]
        and arrays["train_x"].shape[0] == n_train
        and arrays["train_y"].shape == (n_train,)
        and arrays["test_x"].shape[0] == n_test
        and arrays["test_y"].shape == (n_test,)
        and [str(c) for c in arrays["classes"]] == classes
    )
    return arrays if ok else None


def _save_cache(path: Path, arrays: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:  # a read-only or full cache folder only costs speed
        try:
            tmp.unlink()
        except OSError:
            pass


def _stack_images(items: list[tuple[str, int]], decoded: list[np.ndarray]) -> np.ndarray:
    first_path, first = items[0][0], decoded[0]
    h, w = first.shape[:2]
    for (path, _), a in zip(items, decoded, strict=True):
        if a.shape[:2] != (h, w):
            raise DataError(
                f"imagefolder: {path} is {a.shape[1]}x{a.shape[0]} but expected {w}x{h} like {first_path} "
                "(all images must have one size)"
            )
    gray = all(a.ndim == 2 for a in decoded)
    out = np.empty((len(decoded), 1 if gray else 3, h, w), dtype=np.uint8)
    for i, a in enumerate(decoded):
        out[i] = a if a.ndim == 2 else a.transpose(2, 0, 1)  # a grayscale image among colour ones is broadcast
    return out


def _load_imagefolder(data_dir):
    name = "imagefolder"
    expected = "DIR/train/<class>/*.png|jpg|... and DIR/test/<class>/..."
    root = _as_dir(name, data_dir, None, expected)
    train_dir, test_dir = root / "train", root / "test"
    for d in (train_dir, test_dir):
        if not d.is_dir():
            raise DataError(f"{name}: no such folder {d} (expected {expected}; set --data-dir)")
    classes = _class_dirs(train_dir)
    if not classes:
        raise DataError(f"{name}: {train_dir} has no class folders (expected {expected})")
    test_classes = _class_dirs(test_dir)
    missing = [c for c in classes if c not in test_classes]
    extra = [c for c in test_classes if c not in classes]
    if missing:
        raise DataError(
            f"{name}: no such folder {test_dir / missing[0]} (expected the test set to have the same "
            f"class folders as {train_dir})"
        )
    if extra:
        raise DataError(
            f"{name}: {test_dir / extra[0]} is a class that {train_dir} lacks (expected the test set "
            f"to have the same class folders as {train_dir})"
        )

    train_items, train_lines = _list_split(train_dir, classes)
    test_items, test_lines = _list_split(test_dir, classes)
    h = hashlib.sha256(_CACHE_VERSION.encode())
    for line in train_lines + test_lines:
        h.update(line.encode("utf-8", "surrogateescape"))
    cache_file = cache_dir() / f"imagefolder-{h.hexdigest()[:32]}.npz"

    arrays = _load_cache(cache_file, len(train_items), len(test_items), classes)
    if arrays is None:
        items = train_items + test_items
        decoded = _decode_all([p for p, _ in items])
        x = _stack_images(items, decoded)
        y = np.array([label for _, label in items], dtype=np.int64)
        n = len(train_items)
        arrays = {
            "train_x": x[:n],
            "train_y": y[:n],
            "test_x": x[n:],
            "test_y": y[n:],
            "classes": np.array(classes, dtype=str),
        }
        _save_cache(cache_file, arrays)
    _check_labels(name, arrays["train_y"], len(classes), train_dir)
    _check_labels(name, arrays["test_y"], len(classes), test_dir)
    return (
        torch.from_numpy(np.ascontiguousarray(arrays["train_x"])),
        torch.from_numpy(arrays["train_y"]),
        torch.from_numpy(np.ascontiguousarray(arrays["test_x"])),
        torch.from_numpy(arrays["test_y"]),
        classes,
    )
