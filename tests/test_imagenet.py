"""ImageNet: the mobile-setting network and protocols, the streaming image-folder pipeline, direct search."""

from __future__ import annotations

import math

import pytest
import torch

from diffnas.catalog import resolve
from diffnas.errors import ConfigError
from diffnas.schedules.lr import lr_factor
from diffnas.spaces import Genotype
from diffnas.spaces.darts.genotype import DARTS_V2 as DARTS_V2_CELLS
from diffnas.spaces.darts.network import DerivedNetwork

DARTS_V2 = DARTS_V2_CELLS.to_dict()  # the published CIFAR-10 cells


def test_darts_v2_imagenet_network_has_the_reference_size():
    """quark0/darts NetworkImageNet(48, 1000, 14, auxiliary, DARTS_V2): 4,718,752 parameters without the
    auxiliary head (its count_parameters_in_MB), 529.9 M multiply-adds by torch's counter (papers: 574 M)."""
    from diffnas.engine.train import count_flops_m, count_params_m

    torch.manual_seed(0)
    net = DerivedNetwork(Genotype.from_dict(DARTS_V2), 48, 14, 1000, 3, auxiliary=True, stem="imagenet")
    assert round(count_params_m(net) * 1e6) == 4_718_752
    flops = count_flops_m(net, 3, 224)
    assert flops < 600 and flops == pytest.approx(529.911552, abs=1e-3)
    net.train()
    logits, aux = net(torch.zeros(2, 3, 64, 64))
    assert logits.shape == aux.shape == (2, 1000)


def test_imagenet_protocols_resolve_over_the_space_default():
    t = resolve(overrides={"train": {"protocol": "imagenet"}}).train
    assert (t.layers, t.channels, t.batch_size, t.epochs, t.lr) == (14, 48, 128, 250, 0.1)
    assert (t.label_smoothing, t.auxiliary, t.lr_schedule, t.lr_gamma, t.stem) == (
        0.1,
        0.4,
        "exponential",
        0.97,
        "imagenet",
    )
    pc = resolve(overrides={"train": {"protocol": "imagenet-pc", "epochs": 9}}).train
    assert (pc.batch_size, pc.lr, pc.warmup_epochs, pc.lr_schedule, pc.epochs) == (1024, 0.5, 5, "linear", 9)
    assert resolve().train.protocol == "cifar"
    with pytest.raises(ConfigError, match="no retraining protocol 'imagenett'"):
        resolve(overrides={"train": {"protocol": "imagenett"}})


def test_lr_schedules_follow_the_reference_formulas():
    # DARTS ImageNet: StepLR(1, 0.97); PC-DARTS: warm-up (e + 1) / 5 then linear with a gentler last 5 epochs
    assert lr_factor("exponential", 3, 250) == pytest.approx(0.97**3)
    assert [lr_factor("linear", e, 250, warmup=5) for e in (0, 4)] == [0.2, 1.0]
    assert lr_factor("linear", 5, 250, warmup=5) == pytest.approx((250 - 5 - 5) / 245)
    assert lr_factor("linear", 247, 250, warmup=5) == pytest.approx(3 / (245 * 5))
    assert lr_factor("cosine", 5, 10, floor=0.1) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 2)) / 2)


# -- the streaming image-folder pipeline ----------------------------------------------------------
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from diffnas.cli import main  # noqa: E402
from diffnas.data.stream import (  # noqa: E402
    FolderImages,
    ImageStream,
    list_images,
    load_streamed,
    resize_centre_crop,
)
from diffnas.errors import DataError  # noqa: E402

CROP = 32


def make_folder(root, classes=2, train=4, test=2, corrupt=False) -> Path:
    """Tiny JPEGs of varied sizes (36..48 px): class k has a bright stripe in row band k."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for k in range(classes):
            folder = Path(root) / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(36, 49, 2))
                a = rng.integers(0, 80, (h, w, 3)).astype(np.uint8)
                a[k * h // classes : (k + 1) * h // classes] += 150
                Image.fromarray(a).save(folder / f"{i}.jpg", quality=90)
    if corrupt:  # a truncated JPEG among them
        good = (Path(root) / "train" / "c0" / "0.jpg").read_bytes()
        (Path(root) / "train" / "c0" / "zz_truncated.jpg").write_bytes(good[: len(good) // 3])
    return Path(root)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("imgs"))


def test_transforms_give_crops_of_the_right_shape_seeded_per_sample(folder):
    paths, labels, classes = list_images(folder / "train")
    assert classes == ["c0", "c1"] and labels == [0] * 4 + [1] * 4
    images = FolderImages(paths, labels, CROP, seed=0)
    x, y, bad = images[(3, 0, True)]
    assert x.shape == (3, CROP, CROP) and x.dtype == torch.uint8 and bad is None and y == 0
    assert torch.equal(images[(3, 0, True)][0], x)  # the same (seed, epoch, index): the same augmentation
    assert not torch.equal(images[(3, 1, True)][0], x)  # another epoch: another crop
    test_x, _, _ = images[(3, 0, False)]
    assert test_x.shape == (3, CROP, CROP) and torch.equal(images[(3, 5, False)][0], test_x)  # no randomness
    from PIL import Image

    img = Image.fromarray(np.zeros((40, 50, 3), np.uint8))
    assert resize_centre_crop(img, 224).size == (224, 224)
    data = load_streamed(folder, CROP, workers=0)
    (xb, yb), *_ = list(data.eval_batches(data.test, range(len(data.test)), 8, "cpu"))
    assert xb.shape == (4, 3, CROP, CROP) and xb.dtype == torch.float32 and yb.tolist() == [0, 0, 1, 1]
    assert -2.2 < xb.min() < 0 < xb.max() < 2.7  # normalized with ImageNet's mean and std


def test_stream_resumes_exactly_and_ranks_make_up_the_batch(folder):
    data = load_streamed(folder, CROP, workers=0)
    args = dict(mean=data.mean, std=data.std, seed=3)

    def stream(part=None, workers=0):
        return ImageStream(data.train, range(8), 4, workers=workers, part=part, **args)

    one = stream()
    first = [one.next() for _ in range(3)]  # crosses an epoch (2 steps per epoch)
    state = one.state_dict()
    later = one.next()
    resumed = stream()
    resumed.load_state_dict(state)
    assert torch.equal(resumed.next()[0], later[0])
    halves = [stream((r, 2)).next() for r in range(2)]
    assert torch.equal(torch.cat([h[0] for h in halves]), first[0][0])
    assert torch.equal(torch.cat([h[1] for h in halves]), first[0][1])
    assert torch.equal(stream(workers=1).next()[0], first[0][0])  # decoding in a worker process: the same batch


def test_truncated_jpeg_is_skipped_with_a_warning_and_counted(tmp_path, caplog):
    root = make_folder(tmp_path, corrupt=True)
    data = load_streamed(root, CROP, workers=0)
    assert len(data.train) == 9
    s = ImageStream(data.train, range(9), 9, mean=data.mean, std=data.std, seed=0)
    with caplog.at_level(logging.WARNING, logger="diffnas"):
        x, y = s.next()
    assert x.shape[0] == 8 and s.skipped == 1 and s.state_dict()["skipped"] == 1
    assert "zz_truncated.jpg" in caplog.text


def test_empty_class_folder_is_a_one_line_error(tmp_path):
    root = make_folder(tmp_path)
    (root / "train" / "c2").mkdir()
    with pytest.raises(DataError, match=r"class folder .*c2 has no images"):
        load_streamed(root, CROP, workers=0)


def test_train_imagenet_protocol_end_to_end(folder, tmp_path):
    from diffnas.spaces import get_space

    g = Genotype.from_dict(DARTS_V2)
    g.save(tmp_path / "g.json")
    out = tmp_path / "run"
    rc = main(
        ["train", "--protocol", "imagenet", "--dataset", "imagefolder", "--data-dir", str(folder), "--genotype",
         str(tmp_path / "g.json"), "--out", str(out), "--epochs", "1", "--batch-size", "4", "--channels", "8",
         "--layers", "3", "--no-progress", "--set", f"train.crop_size={CROP}", "--set", "train.workers=0"]
    )  # fmt: skip
    assert rc == 0
    result = json.loads((out / "result.json").read_text())
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["test_top5"] == 1.0 and 0 <= record["test_acc"] <= 1 and record["skipped_images"] == 0
    assert result["flops_m"] > 0 and result["params_m"] > 0
    assert record["lr"] == pytest.approx(0.1)
    assert get_space("darts").protocol("imagenet")["stem"] == "imagenet"


# -- direct search on ImageNet ------------------------------------------------------------------
def test_subset_writes_a_seeded_per_class_file_list(folder, tmp_path):
    a, b, c = (tmp_path / f"{n}.txt" for n in "abc")
    base = ["subset", "--data-dir", str(folder), "--per-class", "0.5"]
    assert main([*base, "--seed", "1", "--out", str(a)]) == 0
    assert main([*base, "--seed", "1", "--out", str(b)]) == 0
    assert main([*base, "--seed", "1", "--exclude", str(a), "--out", str(c)]) == 0
    lines = a.read_text().split()
    assert lines == b.read_text().split() and len(lines) == 4
    assert sorted(x.split("/")[0] for x in lines) == ["c0", "c0", "c1", "c1"]
    assert not set(lines) & set(c.read_text().split())


def test_darts_imagenet_space_defaults_and_one_step_search(folder, tmp_path):
    cfg = resolve("idarts", overrides={"space": "darts-imagenet", "dataset": "imagefolder"})
    s = cfg.search
    assert (s.batch_size, s.w_lr, s.w_lr_warmup, s.arch_start_epoch, s.a_lr, cfg.relax.k) == (1024, 0.5, 5, 35, 6e-3, 2)
    assert (cfg.idarts.start_epoch, cfg.idarts["lambda"], cfg.train.protocol) == (40, 0.05, "imagenet-pc")
    lists = tmp_path / "w.txt", tmp_path / "a.txt"
    main(["subset", "--data-dir", str(folder), "--per-class", "0.5", "--out", str(lists[0])])
    main(["subset", "--data-dir", str(folder), "--per-class", "1", "--exclude", str(lists[0]), "--out", str(lists[1])])
    out = tmp_path / "search"
    rc = main(
        ["search", "--method", "pc-darts", "--space", "darts-imagenet", "--dataset", "imagefolder", "--data-dir",
         str(folder), "--out", str(out), "--epochs", "1", "--batch-size", "4", "--channels", "4", "--layers", "3",
         "--no-progress", "--set", f"search.crop_size={CROP}", "--set", "search.workers=0",
         "--set", "search.arch_start_epoch=0", "--set", f"search.train_list={lists[0]}",
         "--set", f"search.val_list={lists[1]}"]
    )  # fmt: skip
    assert rc == 0
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 1 and "arch_loss" in steps[0]
    genotype = json.loads((out / "genotype.json").read_text())
    assert genotype["space"] == "darts-imagenet"
    assert json.loads((out / "metrics.jsonl").read_text())["w_lr"] == pytest.approx(0.5 / 5)  # warm-up epoch 1 of 5


@pytest.mark.slow
def test_torchrun_streams_each_rank_its_shard_and_resumes(folder, tmp_path):
    """2 processes (Gloo) retrain on the streamed folder; a resume continues from rank 0's checkpoint."""
    g = Genotype.from_dict(DARTS_V2)
    g.save(tmp_path / "g.json")
    out = tmp_path / "run"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "diffnas"]
    common = ["--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = [
        "train", "--protocol", "imagenet", "--dataset", "imagefolder", "--data-dir", str(folder), "--genotype",
        str(tmp_path / "g.json"), "--out", str(out), "--epochs", "1", "--batch-size", "4", "--channels", "4",
        "--layers", "3", "--set", f"train.crop_size={CROP}", "--set", "train.workers=1", *common,
    ]  # fmt: skip
    for args in (first, ["train", "--resume", str(out), "--epochs", "2", *common]):
        proc = subprocess.run([*launch, *args], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["job"]["train"]["epoch"] == 1 and ckpt["job"]["train"]["pos"] == 2


SHARED_JPG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"


@pytest.mark.skipif(not SHARED_JPG.is_file(), reason="no ../shared/data/cifar10-jpg.tar.gz")
def test_stream_reads_a_real_jpeg_folder(tmp_path):
    """A few real CIFAR-10 JPEGs (32x32) through the streaming pipeline at crop 24."""
    import tarfile

    wanted = {"train": 3, "test": 1}
    seen: dict = {}
    with tarfile.open(SHARED_JPG) as tar:
        for m in tar:
            parts = m.name.split("/")
            if m.isfile() and len(parts) == 3 and parts[1] in ("cat", "dog"):
                key = (parts[0], parts[1])
                if seen.get(key, 0) < wanted[parts[0]]:
                    seen[key] = seen.get(key, 0) + 1
                    tar.extract(m, tmp_path, filter="data")
            if len(seen) == 4 and all(seen[k] == wanted[k[0]] for k in seen):
                break
    data = load_streamed(tmp_path, 24, workers=0)
    assert data.classes == ["cat", "dog"] and len(data.train) == 6 and len(data.test) == 2
    x, y = ImageStream(data.train, range(6), 6, mean=data.mean, std=data.std, seed=0).next()
    assert x.shape == (6, 3, 24, 24) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
