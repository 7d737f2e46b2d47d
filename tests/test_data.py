"""Tests of diffnas.data: the IDX / CIFAR / image-folder readers, splits and batch streams."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffnas.data import (
    DATASETS,
    Augment,
    BatchStream,
    ImageDataset,
    eval_batches,
    imagefolder,
    load_dataset,
    split_indices,
)
from diffnas.errors import DataError, DiffnasError

CIFAR_JPG = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpg.tar.gz"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Never touch the user's ~/.cache/diffnas."""
    monkeypatch.setenv("DIFFNAS_CACHE", str(tmp_path / "cache"))


def raises_data_error(fn, *needles):
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert str(needle) in msg, (needle, msg)
    return msg


# ------------------------------------------------------------------------------------------------ IDX


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    magic = 0x0800 + arr.ndim if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def write_idx_dir(root: Path, n_train=6, n_test=4, h=5, w=4, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        IDX_NAMES[1]: rng.integers(0, 10, n_train).astype(np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        IDX_NAMES[3]: rng.integers(0, 10, n_test).astype(np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for base, arr in arrays.items():
        data = idx_bytes(arr)
        if gz:
            (root / f"{base}.gz").write_bytes(gzip.compress(data))
        else:
            (root / base).write_bytes(data)
    return arrays


def test_idx_reads_exact_values(tmp_path):
    arrays = write_idx_dir(tmp_path / "fm")
    ds = load_dataset("fashion-mnist", str(tmp_path / "fm"))
    assert isinstance(ds, ImageDataset) and ds.name == "fashion-mnist"
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_x.shape == (6, 1, 5, 4) and ds.test_x.shape == (4, 1, 5, 4)
    assert np.array_equal(ds.train_x[:, 0].numpy(), arrays[IDX_NAMES[0]])
    assert np.array_equal(ds.train_y.numpy(), arrays[IDX_NAMES[1]])
    assert np.array_equal(ds.test_x[:, 0].numpy(), arrays[IDX_NAMES[2]])
    assert np.array_equal(ds.test_y.numpy(), arrays[IDX_NAMES[3]])
    assert ds.classes[0] == "T-shirt/top" and ds.num_classes == 10
    assert ds.in_channels == 1 and ds.image_size == 5 and ds.flip
    pixels = arrays[IDX_NAMES[0]].astype(np.float64) / 255
    assert ds.mean.shape == (1,) and ds.std.shape == (1,)
    assert ds.mean.item() == pytest.approx(pixels.mean(), abs=1e-6)
    assert ds.std.item() == pytest.approx(pixels.std(), abs=1e-6)


def test_idx_uncompressed_names_and_mnist_has_no_flip(tmp_path):
    arrays = write_idx_dir(tmp_path / "m", gz=False)
    ds = load_dataset("mnist", tmp_path / "m")
    assert not ds.flip and ds.classes == [str(i) for i in range(10)]
    assert np.array_equal(ds.test_x[:, 0].numpy(), arrays[IDX_NAMES[2]])


def test_idx_missing_file_and_folder(tmp_path):
    write_idx_dir(tmp_path / "fm")
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz").unlink()
    missing = tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz"
    msg = raises_data_error(lambda: load_dataset("fashion-mnist", tmp_path / "fm"), missing, "no such file")
    assert msg == (f"fashion-mnist: no such file {missing} (expected the IDX files of fashion-mnist; set --data-dir)")
    raises_data_error(lambda: load_dataset("mnist", tmp_path / "nowhere"), tmp_path / "nowhere", "--data-dir")


def test_idx_truncated_gz_names_the_file(tmp_path):
    write_idx_dir(tmp_path / "fm", n_train=50, h=10, w=10)
    path = tmp_path / "fm" / "train-images-idx3-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    raises_data_error(lambda: load_dataset("fashion-mnist", tmp_path / "fm"), path, "truncated")
    path.write_bytes(b"this is not gzip at all")
    raises_data_error(lambda: load_dataset("fashion-mnist", tmp_path / "fm"), path)


def test_idx_wrong_magic(tmp_path):
    arrays = write_idx_dir(tmp_path / "fm")
    path = tmp_path / "fm" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(arrays[IDX_NAMES[1]], magic=0x0803)))
    raises_data_error(lambda: load_dataset("fashion-mnist", tmp_path / "fm"), path, "magic", "0x00000801")


def test_idx_byte_count_and_label_count_and_range(tmp_path):
    arrays = write_idx_dir(tmp_path / "fm")
    path = tmp_path / "fm" / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(arrays[IDX_NAMES[0]])[:-3]))  # a valid gzip of a short IDX file
    raises_data_error(lambda: load_dataset("fashion-mnist", tmp_path / "fm"), path, "bytes")

    arrays = write_idx_dir(tmp_path / "fm")
    labels = tmp_path / "fm" / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(arrays[IDX_NAMES[1]][:-1])))
    raises_data_error(lambda: load_dataset("fashion-mnist", tmp_path / "fm"), labels, "5 labels", "6 images")

    labels.write_bytes(gzip.compress(idx_bytes(np.array([0, 1, 2, 3, 10, 1], dtype=np.uint8))))
    raises_data_error(lambda: load_dataset("fashion-mnist", tmp_path / "fm"), labels, "label 10", "0..9")


def test_unknown_name_and_bad_options(tmp_path):
    images = {"fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder"}
    assert set(DATASETS) == images | {"cifar10-valid", "imagenet16-120"}  # NAS-Bench-201's two
    assert all(isinstance(v, str) and "\n" not in v for v in DATASETS.values())
    raises_data_error(lambda: load_dataset("imagenet"), "imagenet", "fashion-mnist")
    write_idx_dir(tmp_path / "fm")
    raises_data_error(lambda: load_dataset("fashion-mnist", tmp_path / "fm", subset=0), "subset")
    assert issubclass(DataError, DiffnasError)


def test_subset_and_resize(tmp_path):
    arrays = write_idx_dir(tmp_path / "fm", n_train=20, n_test=3, h=8, w=8)
    full = arrays[IDX_NAMES[0]]
    a = load_dataset("fashion-mnist", tmp_path / "fm", subset=5, seed=1)
    b = load_dataset("fashion-mnist", tmp_path / "fm", subset=5, seed=1)
    c = load_dataset("fashion-mnist", tmp_path / "fm", subset=5, seed=2)
    assert a.train_x.shape == (5, 1, 8, 8) and len(a.train_y) == 5
    assert torch.equal(a.train_x, b.train_x) and not torch.equal(a.train_x, c.train_x)
    assert a.test_x.shape == (3, 1, 8, 8)  # test set untouched
    for img, label in zip(a.train_x[:, 0].numpy(), a.train_y.numpy(), strict=True):  # each is a real (image, label)
        rows = [i for i in range(20) if np.array_equal(full[i], img)]
        assert rows and arrays[IDX_NAMES[1]][rows[0]] == label
    assert a.mean.item() == pytest.approx(a.train_x.double().mean().item() / 255, abs=1e-6)
    with pytest.raises(DataError, match="subset 1000 is more than the 20 training images"):  # not silently 20
        load_dataset("fashion-mnist", tmp_path / "fm", subset=1000)

    r = load_dataset("fashion-mnist", tmp_path / "fm", image_size=4)
    assert r.train_x.shape == (20, 1, 4, 4) and r.test_x.shape == (3, 1, 4, 4) and r.image_size == 4
    assert r.train_x.dtype == torch.uint8
    expected = (
        torch.nn.functional.interpolate(
            torch.from_numpy(full)[:, None].float(), size=(4, 4), mode="bilinear", antialias=True
        )
        .round()
        .to(torch.uint8)
    )
    assert torch.equal(r.train_x, expected)


# ------------------------------------------------------------------------------------------------ CIFAR


def write_cifar10(root: Path, n_per_batch=4, seed=0, str_keys=False):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {
            key("data"): rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            key("labels"): [int(v) for v in rng.integers(0, 10, n_per_batch)],
        }
        batches[name] = d
        (root / name).write_bytes(pickle.dumps(d, protocol=2))
    return batches


def test_cifar10_pickle_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    batches = write_cifar10(folder)
    names = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in names]}))
    for where in (folder, tmp_path):  # the pickle folder itself or its parent
        ds = load_dataset("cifar10", where)
        assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
        assert ds.classes == names and ds.flip and ds.in_channels == 3
        first = batches["data_batch_1"]
        assert np.array_equal(ds.train_x[:4].numpy().reshape(4, -1), first[b"data"])
        assert ds.train_y[:4].tolist() == first[b"labels"]
        assert ds.test_y.tolist() == batches["test_batch"][b"labels"]
        assert ds.mean.shape == (3,)


def test_cifar_str_keys_without_meta_and_errors(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, str_keys=True)
    ds = load_dataset("cifar10", folder)
    assert ds.classes[0] == "airplane" and len(ds.train_y) == 20
    raises_data_error(lambda: load_dataset("cifar10"), "cifar10", "--data-dir")
    (folder / "data_batch_3").unlink()
    raises_data_error(lambda: load_dataset("cifar10", tmp_path), folder / "data_batch_3", "no such file")
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}))
    raises_data_error(lambda: load_dataset("cifar10", tmp_path), folder / "data_batch_3", "label 10")
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}))
    raises_data_error(lambda: load_dataset("cifar10", tmp_path), folder / "data_batch_3", "3072")
    (folder / "data_batch_3").write_bytes(b"garbage")
    raises_data_error(lambda: load_dataset("cifar10", tmp_path), folder / "data_batch_3")


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_cifar_pickle_runs_no_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    target = tmp_path / "pwned"
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(str(target)), b"labels": []}))
    raises_data_error(lambda: load_dataset("cifar10", folder), folder / "test_batch")
    assert not target.exists()


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 7), ("test", 3)):
        d = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"fine_labels": list(range(90, 90 + n)),
            b"coarse_labels": [0] * n,
        }
        (folder / name).write_bytes(pickle.dumps(d))
    ds = load_dataset("cifar100", tmp_path)
    assert ds.num_classes == 100 and ds.train_y.tolist() == list(range(90, 97)) and len(ds.test_y) == 3


# ------------------------------------------------------------------------------------------------ image folder


def write_image_folder(root: Path, size=(6, 5), mode="RGB", counts=None, seed=0):
    """root/{train,test}/{cat,dog}/NN.png with random pixels; returns {path: array}."""
    rng = np.random.default_rng(seed)
    counts = counts or {"train": 3, "test": 2}
    out = {}
    for split, n in counts.items():
        for cls in ("dog", "cat"):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                arr = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(arr, mode).save(d / f"{i:02d}.png")
                out[d / f"{i:02d}.png"] = arr
    return out


def test_image_folder_loads_with_labels_and_uses_cache(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    arrays = write_image_folder(root)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / ".hidden").mkdir()
    ds = load_dataset("imagefolder", root)
    assert ds.classes == ["cat", "dog"] and ds.name == "imagefolder"
    assert ds.train_x.shape == (6, 3, 5, 6) and ds.test_x.shape == (4, 3, 5, 6)
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1] and ds.test_y.tolist() == [0, 0, 1, 1]
    assert np.array_equal(ds.train_x[4].numpy().transpose(1, 2, 0), arrays[root / "train" / "dog" / "01.png"])
    assert np.array_equal(ds.test_x[1].numpy().transpose(1, 2, 0), arrays[root / "test" / "cat" / "01.png"])
    caches = list((tmp_path / "cache").glob("*.npz"))
    assert len(caches) == 1

    def broken(path):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(imagefolder, "_decode_image", broken)
    again = load_dataset("imagefolder", root)
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)

    # a new file changes the key: the folder is decoded again
    Image.fromarray(arrays[root / "test" / "cat" / "00.png"]).save(root / "test" / "cat" / "02.png")
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_dataset("imagefolder", root)


def test_image_folder_corrupt_cache_is_rebuilt(tmp_path):
    root = tmp_path / "imgs"
    write_image_folder(root)
    ds = load_dataset("imagefolder", root)
    (cache,) = (tmp_path / "cache").glob("*.npz")
    cache.write_bytes(cache.read_bytes()[:100])
    again = load_dataset("imagefolder", root)
    assert torch.equal(again.train_x, ds.train_x)
    assert cache.stat().st_size > 100  # rewritten


def test_image_folder_grayscale_and_mixed(tmp_path):
    write_image_folder(tmp_path / "g", mode="L")
    ds = load_dataset("imagefolder", tmp_path / "g")
    assert ds.in_channels == 1 and ds.mean.shape == (1,)
    arrays = write_image_folder(tmp_path / "m", mode="L")
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "m" / "test" / "dog" / "09.png")
    mixed = load_dataset("imagefolder", tmp_path / "m")
    assert mixed.in_channels == 3
    gray = arrays[tmp_path / "m" / "train" / "cat" / "00.png"]
    assert all(np.array_equal(mixed.train_x[0, c].numpy(), gray) for c in range(3))


def test_image_folder_errors(tmp_path):
    root = tmp_path / "imgs"
    write_image_folder(root)
    empty = root / "train" / "dog"
    for f in empty.iterdir():
        f.unlink()
    raises_data_error(lambda: load_dataset("imagefolder", root), empty, "no images")

    root = tmp_path / "sizes"
    write_image_folder(root)
    odd = root / "train" / "dog" / "01.png"
    Image.fromarray(np.zeros((7, 7, 3), np.uint8)).save(odd)
    raises_data_error(lambda: load_dataset("imagefolder", root), odd, "7x7", "6x5", "one size")

    root = tmp_path / "broken"
    write_image_folder(root)
    bad = root / "test" / "cat" / "00.png"
    bad.write_bytes(b"\x89PNG not really")
    raises_data_error(lambda: load_dataset("imagefolder", root), bad, "cannot read")

    root = tmp_path / "classes"
    write_image_folder(root)
    (root / "test" / "bird").mkdir()
    raises_data_error(lambda: load_dataset("imagefolder", root), root / "test" / "bird")

    raises_data_error(lambda: load_dataset("imagefolder"), "imagefolder", "--data-dir")
    (tmp_path / "only_train" / "train" / "a").mkdir(parents=True)
    raises_data_error(
        lambda: load_dataset("imagefolder", tmp_path / "only_train"), tmp_path / "only_train" / "test", "no such folder"
    )


# ------------------------------------------------------------------------------------------------ batches


def test_split_indices():
    tr, va = split_indices(10, 0.5, seed=0)
    assert len(tr) == 5 and len(va) == 5
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(10))
    tr2, _ = split_indices(10, 0.5, seed=0)
    tr3, _ = split_indices(10, 0.5, seed=1)
    assert torch.equal(tr, tr2) and not torch.equal(tr, tr3)
    tr, va = split_indices(7, 0.7, seed=3)
    assert (len(tr), len(va)) == (5, 2)
    raises_data_error(lambda: split_indices(1, 0.5, 0), "train_portion")
    raises_data_error(lambda: split_indices(10, 1.0, 0), "train_portion")


def make_data(n=50, c=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    return x, torch.arange(n)  # label == sample index, to identify samples in batches


def test_batch_stream_epochs_and_normalization():
    x, y = make_data()
    idx = torch.arange(10, 50)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    s = BatchStream(x, y, idx, 8, mean=mean, std=std, seed=0)
    assert s.steps_per_epoch == 5
    seen = []
    for _ in range(5):
        xb, yb = s.next()
        assert xb.dtype == torch.float32 and xb.shape == (8, 3, 8, 8) and yb.dtype == torch.int64
        expected = (x[yb].float() / 255 - mean[None, :, None, None]) / std[None, :, None, None]
        assert torch.allclose(xb, expected, atol=1e-6)
        seen += yb.tolist()
    assert sorted(seen) == list(range(10, 50))  # one epoch: every index once
    assert s.state_dict() == {"epoch": 0, "pos": 5}
    second = torch.cat([s.next()[1] for _ in range(5)])
    assert s.state_dict() == {"epoch": 1, "pos": 5}
    assert sorted(second.tolist()) == list(range(10, 50)) and second.tolist() != seen

    assert BatchStream(x, y, idx, 7, mean=mean, std=std, seed=0).steps_per_epoch == 5  # drop_last
    assert BatchStream(x, y, idx, 7, mean=mean, std=std, seed=0, drop_last=False).steps_per_epoch == 6
    small = BatchStream(x, y, torch.arange(3), 8, mean=mean, std=std, seed=0)
    assert small.steps_per_epoch == 1 and small.next()[0].shape[0] == 3


def test_batch_stream_resume_is_bitwise_identical():
    x, y = make_data()
    aug = Augment(crop_padding=2, flip=True, cutout=4)

    def make():
        return BatchStream(x, y, torch.arange(50), 8, mean=[0.5] * 3, std=[0.25] * 3, seed=7, augment=aug)

    torch.manual_seed(123)
    a = make()
    for _ in range(4):
        a.next()
    state, rng = a.state_dict(), torch.get_rng_state()
    reference = [a.next() for _ in range(10)]  # crosses two epoch boundaries (6 steps per epoch)

    torch.manual_seed(999)
    b = make()
    b.next()
    b.load_state_dict(state)
    torch.set_rng_state(rng)
    resumed = [b.next() for _ in range(10)]
    for (xa, ya), (xb, yb) in zip(reference, resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_random_crop_keeps_shape_and_shifts():
    x, y = make_data(n=32, h=6, w=6)
    s = BatchStream(x, y, torch.arange(32), 32, mean=[0.0] * 3, std=[1.0] * 3, seed=0, augment=Augment(crop_padding=2))
    torch.manual_seed(0)
    xb, yb = s.next()
    assert xb.shape == (32, 3, 6, 6)
    padded = torch.nn.functional.pad(x[yb].float() / 255, (2, 2, 2, 2))
    moved = 0
    for i in range(32):
        windows = [
            (dy, dx) for dy in range(5) for dx in range(5) if torch.equal(xb[i], padded[i, :, dy : dy + 6, dx : dx + 6])
        ]
        assert windows, "every crop is a window of the zero-padded image"
        moved += (2, 2) not in windows
    assert moved > 16


def test_random_flip_flips_some():
    x, y = make_data(n=64)
    s = BatchStream(x, y, torch.arange(64), 64, mean=[0.0] * 3, std=[1.0] * 3, seed=0, augment=Augment(flip=True))
    torch.manual_seed(0)
    xb, yb = s.next()
    orig = x[yb].float() / 255
    same = [torch.equal(xb[i], orig[i]) for i in range(64)]
    flipped = [torch.equal(xb[i], orig[i].flip(2)) for i in range(64)]
    assert all(a or b for a, b in zip(same, flipped, strict=True))
    assert 10 < sum(flipped) < 54


def test_cutout_zeroes_one_square():
    n, size, length = 64, 10, 4
    x = torch.full((n, 3, size, size), 255, dtype=torch.uint8)
    s = BatchStream(
        x, torch.arange(n), torch.arange(n), n, mean=[0.0] * 3, std=[1.0] * 3, seed=0, augment=Augment(cutout=length)
    )
    torch.manual_seed(0)
    xb, _ = s.next()
    full_squares = 0
    for img in xb:
        zero = img == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])
        rows, cols = zero[0].any(1), zero[0].any(0)
        assert torch.equal(zero[0], rows[:, None] & cols[None, :])  # a rectangle
        assert 1 <= rows.sum() <= length and 1 <= cols.sum() <= length
        assert torch.all(img[~zero] == 1.0)
        full_squares += int(rows.sum() == length and cols.sum() == length)
    assert full_squares > n // 4


def test_eval_batches_in_order():
    x, y = make_data(n=10)
    batches = list(eval_batches(x, y, 4, mean=[0.5] * 3, std=[0.5] * 3))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    xs = torch.cat([b[0] for b in batches])
    assert torch.cat([b[1] for b in batches]).tolist() == list(range(10))
    assert torch.allclose(xs, (x.float() / 255 - 0.5) / 0.5)


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(), reason="Fashion-MNIST not installed")
def test_real_fashion_mnist():
    ds = load_dataset("fashion-mnist")
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(ds.train_y), torch.full((10,), 6000))
    assert ds.mean.item() == pytest.approx(0.2860, abs=1e-3) and ds.std.item() == pytest.approx(0.3530, abs=1e-3)


@pytest.mark.skipif(not CIFAR_JPG.exists(), reason="../shared/data/cifar10-jpg.tar.gz absent")
def test_cifar10_jpg_image_folder(tmp_path):
    """A sample of every class of the shared CIFAR-10 JPEG folder (files numbered < 150 / < 50)."""
    root = tmp_path / "cifar10-jpg"
    keep = {"train": 150, "test": 50}
    with tarfile.open(CIFAR_JPG, "r:gz") as tar:
        for m in tar:
            parts = m.name.split("/")
            if m.isfile() and len(parts) == 3 and parts[2].endswith(".jpg") and int(parts[2][:-4]) < keep[parts[0]]:
                dest = root.joinpath(*parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(m).read())
    ds = load_dataset("imagefolder", root, subset=1000, seed=0)
    assert ds.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert ds.train_x.shape == (1000, 3, 32, 32) and ds.test_x.shape == (500, 3, 32, 32)
    assert torch.equal(torch.bincount(ds.test_y), torch.full((10,), 50))
    assert torch.allclose(ds.mean, torch.tensor([0.491, 0.482, 0.447]), atol=0.03)
    t0 = time.perf_counter()
    again = load_dataset("imagefolder", root, subset=1000, seed=0)
    assert time.perf_counter() - t0 < 5 and torch.equal(again.train_x, ds.train_x)
