"""What every format reader shares: the reader table entry, folder and label checks, the cache folder.

Every reader returns uint8 images ``[N, C, H, W]`` and int64 labels. Problems with the user's files
raise :class:`diffnas.errors.DataError` with a one-line message that names the file or folder and
says what was expected there; the checks here word those messages the same way for every format.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError


@dataclass(frozen=True)
class Reader:
    """One named data set of a format module, as listed in that module's ``READERS``.

    ``load(name, data_dir)`` returns ``(train_x, train_y, test_x, test_y, classes)``, the four as numpy
    arrays (``load_dataset`` makes them tensors).
    """

    load: Callable
    description: str  # what :data:`diffnas.data.DATASETS` says about it
    flip: bool = True  # horizontal flip is a valid augmentation
    aliases: tuple[str, ...] = ()  # other spellings of the name


def cache_dir() -> Path:
    """Where decoded data sets are cached: ``$DIFFNAS_CACHE`` or ``~/.cache/diffnas``."""
    env = os.environ.get("DIFFNAS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "diffnas"


def check_labels(name: str, labels: np.ndarray, num_classes: int, where: Path | str) -> None:
    if labels.size == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise DataError(f"{name}: label {bad} out of range in {where} (expected labels 0..{num_classes - 1})")


def check_same_size(name: str, train_x: np.ndarray, test_x: np.ndarray, train_src, test_src) -> None:
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"{name}: test images in {test_src} have shape {tuple(test_x.shape[1:])} but training images in "
            f"{train_src} have {tuple(train_x.shape[1:])} (expected one image shape)"
        )


def reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def as_dir(name: str, data_dir, default: str | None, expected: str) -> Path:
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
