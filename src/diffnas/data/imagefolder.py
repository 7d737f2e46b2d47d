"""Your own images: ``DIR/train/<class>/*.png`` (or jpg, jpeg, bmp, gif, webp) and ``DIR/test/<class>/...``.

Decoding thousands of files with Pillow is slow, so the decoded arrays are cached in
:func:`~diffnas.data.common.cache_dir`, keyed by the file list, sizes and modification times.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from .common import Reader, as_dir, cache_dir, check_labels, reason

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

_CACHE_VERSION = "diffnas-imagefolder-v1"
_POOL_MIN_FILES = 4096  # below this, decode in-process


def _decode_image(path: str) -> np.ndarray:
    """Decode one image: [H, W] uint8 if its mode is 'L', else [H, W, 3] RGB. DataError if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode == "L":
                return np.asarray(im, dtype=np.uint8).copy()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError, DecompressionBombError)
        raise DataError(f"imagefolder: cannot read image {path} ({reason(e)}); expected a readable image") from None


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
            raise DataError(f"imagefolder: cannot list {folder} ({reason(e)}); expected a readable folder") from None
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
        raise DataError(f"imagefolder: cannot list {folder} ({reason(e)}); expected a readable folder") from None


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


def load(name: str, data_dir):
    """The training and test splits of the image folder ``data_dir``, from the cache when it is current."""
    expected = "DIR/train/<class>/*.png|jpg|... and DIR/test/<class>/..."
    root = as_dir(name, data_dir, None, expected)
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
    check_labels(name, arrays["train_y"], len(classes), train_dir)
    check_labels(name, arrays["test_y"], len(classes), test_dir)
    return arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"], classes


READERS = {
    "imagefolder": Reader(
        load,
        "your own images: DIR/train/<class>/*.png|jpg|jpeg|bmp|gif|webp and DIR/test/<class>/... "
        "(all one size; needs --data-dir)",
        aliases=("image-folder", "image_folder"),
    ),
}
