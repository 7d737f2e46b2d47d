"""Image folders too large for memory: files listed once, decoded and augmented per batch in worker processes.

The in-memory reader (:mod:`.imagefolder`) decodes a folder once into one uint8 tensor; that
is the path for small sets. Here a ``torch.utils.data.DataLoader`` decodes each batch with
Pillow in ``workers`` processes, with ImageNet's standard transforms written on Pillow and
numpy (torchvision does not import beside our torch): for training a random resized crop,
a horizontal flip and colour jitter; for tests a resize to ``crop * 8/7`` (256 for 224) and
a centre crop. Workers send uint8 images; normalization happens on the batch's device.

Every sample's augmentation draws from its own generator seeded by (seed, epoch, index), so
a batch does not depend on the number of workers or on which rank decodes it, and a
stream resumes exactly from ``state_dict()`` (epoch, batches taken). An unreadable or
truncated image is skipped with a warning and counted (``skipped``), not a crash.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .batches import _epoch_seed, _normalize, _stats
from .common import reason
from .imagefolder import _class_dirs, _list_split

log = logging.getLogger("diffnas")

# ImageNet's channel statistics (what the reference code normalizes with): a streamed set is never scanned whole
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.2}  # DARTS's ColorJitter


# -- transforms on Pillow images ----------------------------------------------------------------
def random_resized_crop(img, size: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """A crop of random area (``scale`` of the image) and aspect ratio, resized to size x size (Inception's)."""
    w, h = img.size
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            break
    else:  # the whole image's centre at the nearest allowed aspect ratio
        aspect = min(max(w / h, ratio[0]), ratio[1])
        cw, ch = (w, round(w / aspect)) if w / h <= aspect else (round(h * aspect), h)
        cw, ch = min(cw, w), min(ch, h)
        top, left = (h - ch) // 2, (w - cw) // 2
    return img.resize((size, size), _bilinear(), box=(left, top, left + cw, top + ch))


def color_jitter(img, rng: np.random.Generator, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2):
    """Brightness, contrast, saturation (factors in [1 - b, 1 + b]) and hue (shift in [-hue, hue] of a turn),
    in a random order."""
    from PIL import Image, ImageEnhance

    def hue_shift(im, shift):
        h, s, v = im.convert("HSV").split()
        h = Image.fromarray((np.asarray(h, dtype=np.int16) + round(shift * 255)).astype(np.uint8), "L")  # wraps
        return Image.merge("HSV", (h, s, v)).convert("RGB")

    enhancers = {
        "brightness": (ImageEnhance.Brightness, brightness),
        "contrast": (ImageEnhance.Contrast, contrast),
        "saturation": (ImageEnhance.Color, saturation),
    }
    for k in rng.permutation(4):
        if k == 3:
            if hue:
                img = hue_shift(img, rng.uniform(-hue, hue))
            continue
        enhancer, strength = list(enhancers.values())[k]
        if strength:
            img = enhancer(img).enhance(rng.uniform(max(0.0, 1 - strength), 1 + strength))
    return img


def resize_centre_crop(img, size: int):
    """The test transform: the shorter side to ``size * 8/7`` (256 for 224), then the centre size x size."""
    short = round(size * 8 / 7)
    w, h = img.size
    nw, nh = (short, max(short, round(h * short / w))) if w <= h else (max(short, round(w * short / h)), short)
    img = img.resize((nw, nh), _bilinear())
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def _bilinear():
    from PIL import Image

    return Image.Resampling.BILINEAR


# -- the files ----------------------------------------------------------------------------------
def list_images(split_dir: Path, file_list=None, classes: list[str] | None = None):
    """(paths, labels, classes) of the image folder ``split_dir`` (one folder per class), or of the files
    of ``file_list`` under it (``diffnas subset``'s lines: ``<class>/<file>``)."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(f"imagefolder: no such folder {split_dir} (expected DIR/train/<class>/*.jpg and DIR/test/...)")
    classes = classes if classes is not None else _class_dirs(split_dir)
    if not classes:
        raise DataError(f"imagefolder: {split_dir} has no class folders (expected {split_dir}/<class>/*.jpg)")
    if file_list is None:
        items, _ = _list_split(split_dir, classes)  # an empty class folder is its one-line error
        return [p for p, _ in items], [label for _, label in items], classes
    index = {c: i for i, c in enumerate(classes)}
    paths, labels = [], []
    for n, line in enumerate(read_file_list(file_list), 1):
        cls = line.split("/", 1)[0]
        if cls not in index or "/" not in line:
            raise DataError(f"{file_list}: line {n} {line!r} names no class folder of {split_dir}")
        paths.append(str(split_dir / line))
        labels.append(index[cls])
    return paths, labels, classes


def read_file_list(path) -> list[str]:
    try:
        lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the file list ({reason(e)})") from None
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise DataError(f"{path}: the file list names no images")
    return lines


def per_class_subset(split_dir, fraction: float, seed: int, exclude: Sequence[str] = ()) -> list[str]:
    """``fraction`` of each class's images (at least one), drawn with ``seed``, as ``<class>/<file>`` lines;
    files in ``exclude`` are never drawn (PC-DARTS's disjoint 10 % for weights, 2.5 % for the architecture)."""
    if not 0 < fraction <= 1:
        raise DataError(f"--per-class must be a fraction in (0, 1], got {fraction}")
    paths, labels, classes = list_images(split_dir)
    skip = set(exclude)
    by_class: dict[int, list[str]] = {}
    sizes = [0] * len(classes)
    for p, label in zip(paths, labels):
        rel = f"{classes[label]}/{Path(p).name}"
        sizes[label] += 1
        if rel not in skip:
            by_class.setdefault(label, []).append(rel)
    out = []
    for label in range(len(classes)):
        files = by_class.get(label, [])
        if not files:
            raise DataError(f"{Path(split_dir) / classes[label]}: no images left to draw (all excluded)")
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + label)
        keep = min(len(files), max(1, round(fraction * sizes[label])))  # a fraction of the whole class
        out += [files[i] for i in sorted(torch.randperm(len(files), generator=g)[:keep].tolist())]
    return out


class FolderImages(Dataset):
    """Decodes ``dataset[(index, epoch, augment)]``: (uint8 [3, crop, crop], label, None), or (None, label, why)
    when the file cannot be read. ``augment``: the training transforms, seeded by (seed, epoch, index); else
    the test transform."""

    def __init__(self, paths: list[str], labels: list[int], crop: int, seed: int = 0):
        self.paths, self.labels, self.crop, self.seed = paths, labels, int(crop), int(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        index, epoch, augment = key
        from PIL import Image

        path = self.paths[index]
        try:
            with Image.open(path) as im:
                if not augment:
                    im.draft("RGB", (self.crop, self.crop))  # JPEG: decode at a reduced scale still >= the crop
                img = im.convert("RGB")
            if augment:
                rng = np.random.default_rng([self.seed, epoch, index])
                img = random_resized_crop(img, self.crop, rng)
                if rng.random() < 0.5:
                    img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                img = color_jitter(img, rng, **JITTER)
            else:
                img = resize_centre_crop(img, self.crop)
        except Exception as e:  # Pillow raises many types (OSError on truncation, SyntaxError, ValueError, ...)
            return None, self.labels[index], f"{path} ({reason(e)})"
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()), self.labels[index], None


def _collate(samples):
    good = [(x, y) for x, y, _ in samples if x is not None]
    bad = [why for x, _, why in samples if x is None]
    if not good:
        return None, None, bad
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good], dtype=torch.long), bad


@dataclass
class StreamedFolder:
    """An image folder read per batch: its training and test file lists, classes and normalization."""

    name: str
    train: FolderImages
    test: FolderImages
    classes: list[str]
    crop: int
    workers: int
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    in_channels: int = 3
    flip: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return self.crop

    @property
    def train_y(self) -> list[int]:
        return self.train.labels

    def eval_batches(self, images: FolderImages, indices: Sequence[int], batch_size: int, device) -> Iterator:
        """``images[indices]`` in order, test-transformed and normalized (unreadable ones skipped with a warning)."""
        keys = [(int(i), 0, False) for i in indices]
        batches = [keys[i : i + batch_size] for i in range(0, len(keys), batch_size)]
        mean, std = _stats(self.mean, device), _stats(self.std, device)
        for x, y, bad in _loader(images, batches, self.workers):
            _warn(bad)
            if x is not None:
                yield _normalize(x.to(device), mean, std), y.to(device)


def load_streamed(root, crop: int, workers: int, seed: int = 0, train_list=None) -> StreamedFolder:
    """``DIR/train/<class>/...`` and ``DIR/test/<class>/...`` (or ``DIR/val``), listed, not decoded."""
    root = Path(root) if root else None
    if root is None or not root.is_dir():
        raise DataError(f"imagefolder: no such folder {root} (expected DIR/train/<class>/*.jpg; set --data-dir)")
    paths, labels, classes = list_images(root / "train", train_list)
    test_dir = root / "test" if (root / "test").is_dir() or not (root / "val").is_dir() else root / "val"
    test_paths, test_labels, _ = list_images(test_dir, classes=classes)
    return StreamedFolder(
        "imagefolder",
        FolderImages(paths, labels, crop, seed),
        FolderImages(test_paths, test_labels, crop, seed),
        classes,
        int(crop),
        int(workers),
    )


def _loader(images: FolderImages, batches, workers: int):
    """A DataLoader over explicit batches of keys; in-process when ``workers`` is 0."""
    return DataLoader(
        images,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_collate,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )


def _warn(bad: list[str]) -> None:
    for why in bad:
        log.warning("diffnas: warning: skipped unreadable image %s", why)


class ImageStream:
    """Batches of a streamed folder with ``BatchStream``'s interface (``next``, ``steps_per_epoch``, state).

    ``indices``: the images of the split drawn from. The order of epoch k is a permutation seeded by
    (seed, k); ``part=(rank, world)``: ``batch_size`` is the global batch and this rank decodes only its
    contiguous ``1/world`` of every global batch (the ranks' parts together are the single-process batch).
    """

    def __init__(
        self,
        images: FolderImages,
        indices,
        batch_size: int,
        *,
        mean,
        std,
        seed: int,
        workers: int = 0,
        device="cpu",
        part: tuple[int, int] | None = None,
    ):
        self.images, self.batch_size, self.seed, self.workers = images, int(batch_size), int(seed), int(workers)
        self.indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if len(self.indices) == 0:
            raise DataError("no images to draw batches from (the training split is empty)")
        self.device = torch.device(device)
        self.part = part if part is not None and part[1] > 1 else (0, 1)
        self.steps_per_epoch = max(1, len(self.indices) // self.batch_size)
        self.mean, self.std = _stats(mean, self.device), _stats(std, self.device)
        self.epoch, self.pos, self.skipped = 0, 0, 0
        self._it = None

    def __len__(self) -> int:
        return self.steps_per_epoch

    def _batches(self, epoch: int, start: int) -> list[list[tuple[int, int, bool]]]:
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        order = self.indices[torch.randperm(len(self.indices), generator=g)].tolist()
        rank, world = self.part
        out = []
        for b in range(start, self.steps_per_epoch):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            per = len(batch) // world
            if per == 0:
                raise DataError(f"a batch of {len(batch)} images cannot be split over {world} processes")
            out.append([(i, epoch, True) for i in batch[rank * per : (rank + 1) * per]])
        return out

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch: float32 [B, 3, crop, crop] normalized images and int64 [B] labels, on ``device``."""
        if self.pos >= self.steps_per_epoch:
            self.epoch, self.pos, self._it = self.epoch + 1, 0, None
        if self._it is None:
            self._it = iter(_loader(self.images, self._batches(self.epoch, self.pos), self.workers))
        x, y, bad = next(self._it)
        self.pos += 1
        self.skipped += len(bad)
        _warn(bad)
        if x is None:  # every image of the batch unreadable: take the next one
            return self.next()
        return _normalize(x.to(self.device), self.mean, self.std), y.to(self.device)

    __next__ = next

    def __iter__(self) -> ImageStream:
        return self

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "skipped": self.skipped}

    def load_state_dict(self, d: dict) -> None:
        epoch, pos = int(d["epoch"]), int(d["pos"])
        if epoch < 0 or not 0 <= pos <= self.steps_per_epoch:
            raise ValueError(f"bad ImageStream state {d!r} (steps_per_epoch={self.steps_per_epoch})")
        self.epoch, self.pos, self.skipped, self._it = epoch, pos, int(d.get("skipped", 0)), None
