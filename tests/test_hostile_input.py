"""Hostile and impossible input: one line on stderr and exit code 2, never a traceback or a silent mix.

Resuming with other flags, impossible scales, wrong value types, unknown devices, checkpoints of
another run, and a run directory that cannot be written.
"""

import errno
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import write_fake_idx

from diffnas.cli import main
from diffnas.runtime.rundir import RunDir, rng_state

TINY = ["--channels", "4", "--layers", "3", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_idx(tmp_path_factory.mktemp("fmnist"))  # 96 training images, 32 test images


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """A finished 2-epoch search and a finished 1-epoch retraining of its genotype."""
    root = tmp_path_factory.mktemp("runs")
    assert main(["search", "--data-dir", str(data), "--out", str(root / "search"), "--epochs", "2", *TINY]) == 0
    train = ["train", "--genotype", str(root / "search"), "--data-dir", str(data), "--out", str(root / "train")]
    assert main([*train, "--epochs", "1", *TINY]) == 0
    return root


@pytest.fixture
def search_run(runs, tmp_path):
    shutil.copytree(runs / "search", tmp_path / "r")
    return tmp_path / "r"


def refused(capsys, args, *words) -> str:
    """``args`` exit with code 2 and one ``diffnas: error:`` line on stderr that contains ``words``."""
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("diffnas: error: "), err
    for word in words:
        assert word in err, err
    return err


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def metrics(run: Path) -> list:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- item 2: resuming with other flags -----------------------------------------------------------
def test_resume_refuses_a_changed_config_and_writes_nothing(search_run, capsys):
    before = snapshot(search_run)
    for flags, key in (
        (["--method", "rarts"], "method"),
        (["--channels", "8"], "search.channels"),
        (["--seed", "3"], "seed"),
        (["--set", "search.w_wd=1"], "search.w_wd"),
        (["--preset", "tiny"], "--preset"),
    ):
        refused(capsys, ["search", "--resume", str(search_run), *flags, "--no-progress"], key)
        assert snapshot(search_run) == before, flags
    # the same values as the run's are no change; progress flags are not config
    assert main(["search", "--resume", str(search_run), "--channels", "4", "--method", "darts", "--no-progress"]) == 0
    assert main(["search", "--resume", str(search_run), "--no-progress"]) == 0
    assert [m["epoch"] for m in metrics(search_run)] == [0, 1]


def test_resume_of_the_other_kind_or_of_nothing_is_refused(runs, tmp_path, capsys):
    refused(capsys, ["train", "--resume", str(runs / "search"), "--no-progress"], "is a search run")
    refused(capsys, ["search", "--resume", str(runs / "train"), "--no-progress"], "is a train run")
    refused(capsys, ["search", "--resume", str(tmp_path / "nope"), "--no-progress"], "no config.yaml")
    assert not (tmp_path / "nope").exists()


def test_resume_extends_a_run_and_takes_new_learning_rates(search_run, capsys):
    args = ["search", "--resume", str(search_run), "--epochs", "3", "--no-progress"]
    assert main([*args, "--set", "search.w_lr=0.01", "--set", "search.a_lr=1e-5"]) == 0
    records = metrics(search_run)
    assert [m["epoch"] for m in records] == [0, 1, 2]
    saved = yaml.safe_load((search_run / "config.yaml").read_text())
    assert saved["search"]["epochs"] == 3 and saved["search"]["w_lr"] == 0.01
    # epoch 2 of a 3-epoch cosine schedule from the new rate down to the floor (0.001)
    assert records[2]["w_lr"] == pytest.approx(0.001 + (0.01 - 0.001) * (1 + math.cos(math.pi * 2 / 3)) / 2)
    method = torch.load(search_run / "checkpoint.pt", weights_only=True)["job"]["method"]
    assert method["w_lr_schedule"]["base_lrs"] == [0.01] and method["w_lr_schedule"]["T_max"] == 3
    assert [g["lr"] for g in method["a_opt"]["param_groups"]] == [1e-5]


def test_train_resume_takes_a_new_learning_rate(runs, tmp_path):
    shutil.copytree(runs / "train", tmp_path / "t")
    assert main(["train", "--resume", str(tmp_path / "t"), "--epochs", "2", "--set", "train.lr=0.005"]) == 0
    state = torch.load(tmp_path / "t" / "checkpoint.pt", weights_only=True)["job"]
    assert state["lr_schedule"]["base_lrs"] == [0.005] and state["lr_schedule"]["T_max"] == 2
    assert metrics(tmp_path / "t")[1]["lr"] == pytest.approx(0.005 / 2)  # cosine at 1 of 2 epochs, floor 0


# -- item 5: impossible settings -----------------------------------------------------------------
def test_impossible_scales_are_refused(data, runs, tmp_path, capsys):
    out = ["--data-dir", str(data), "--out", str(tmp_path / "r"), "--epochs", "1", "--no-progress"]
    search = ["search", *out, "--channels", "4", "--batch-size", "16"]
    for layers in ("1", "2"):
        refused(capsys, [*search, "--layers", layers], "search.layers", "at least 3")
    train = ["train", "--genotype", str(runs / "search"), *out, "--channels", "4", "--batch-size", "16"]
    refused(capsys, [*train, "--layers", "2"], "train.layers")
    refused(capsys, [*search, "--layers", "3", "--nodes", "0"], "search.nodes")
    refused(capsys, [*search, "--layers", "3", "--subset", "1000"], "subset 1000", "96")
    search = ["search", *out, "--channels", "4", "--layers", "3"]
    refused(capsys, [*search, "--batch-size", "64"], "search.batch_size = 64", "train split (48 images)")
    refused(capsys, [*search, "--batch-size", "64", "--set", "search.train_portion=0.25"], "train split (24")
    train = ["train", "--genotype", str(runs / "search"), *out, "--channels", "4", "--layers", "3"]
    refused(capsys, [*train, "--batch-size", "128"], "train.batch_size = 128", "training set (96 images)")


@pytest.mark.parametrize("index", [1.5, "0", True, -1])
def test_genotype_indices_must_be_integers(data, runs, tmp_path, capsys, index):
    g = json.loads((runs / "search" / "genotype.json").read_text())
    g["normal"][0][1] = index
    (tmp_path / "g.json").write_text(json.dumps(g))
    args = ["train", "--genotype", str(tmp_path / "g.json"), "--data-dir", str(data), "--out", str(tmp_path / "t")]
    refused(capsys, [*args, "--epochs", "1", *TINY], "normal input")
    assert not (tmp_path / "t").exists()


def test_genotype_node_count_must_be_a_positive_integer(runs, tmp_path, capsys):
    g = json.loads((runs / "search" / "genotype.json").read_text())
    for nodes in (0, "4", 4.0):
        (tmp_path / "g.json").write_text(json.dumps({**g, "nodes": nodes}))
        refused(capsys, ["show", str(tmp_path / "g.json")], "nodes must be an integer")


# -- item 6: one line instead of a traceback -------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a PyTorch without a GPU")
def test_cuda_without_a_gpu(data, tmp_path, capsys):
    args = ["search", "--data-dir", str(data), "--out", str(tmp_path / "r"), "--epochs", "1", *TINY]
    refused(capsys, [*args, "--device", "cuda"], "device cuda", "no CUDA GPU")
    assert not (tmp_path / "r").exists()


def test_unknown_device(data, tmp_path, capsys):
    args = ["search", "--data-dir", str(data), "--out", str(tmp_path / "r"), "--epochs", "1", *TINY]
    refused(capsys, [*args, "--device", "foo"], "device must be auto, cpu, cuda or cuda:N", "'foo'")
    refused(capsys, [*args, "--set", "device=meta"], "'meta'")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "item, words",
    [
        ("search.w_lr=null", ["search.w_lr must be a number", "None"]),
        ("search.a_lr=[1,2]", ["search.a_lr must be a number"]),
        ("search.a_betas=abc", ["search.a_betas must be a list of 2"]),
        ("search.a_betas=[0.5]", ["search.a_betas must be a list of 2"]),
        ("search.a_betas=[0.5, x]", ["search.a_betas[1] must be a number"]),
        ("search=3", ["search is a section"]),
        ("search.epochs=2.5", ["search.epochs must be an integer"]),
        ("search.epochs=true", ["search.epochs must be an integer"]),
        ("relax.init_scale={a: 1}", ["relax.init_scale must be a number"]),
        ("search.schedule=3", ["search.schedule must be a string"]),
        ("subset=abc", ["subset must be an integer"]),
        ("darts-cd.train_shared=1", ["darts-cd.train_shared must be true or false"]),
    ],
)
def test_values_of_the_wrong_type(data, tmp_path, capsys, item, words):
    method = ["--method", "darts-cd"] if item.startswith("darts-cd") else []
    args = ["search", *method, "--data-dir", str(data), "--out", str(tmp_path / "r"), "--epochs", "1", *TINY]
    refused(capsys, [*args, "--set", item], *words)
    assert not (tmp_path / "r").exists()


def test_values_of_the_right_type_still_pass():
    from diffnas.catalog import resolve

    cfg = resolve(
        overrides={"search": {"w_lr": "3e-2", "a_lr": 1, "a_betas": [0, "0.99"], "epochs": "4"}, "reg": {"size": True}}
    )
    assert cfg.search.w_lr == 0.03 and cfg.search.a_lr == 1.0 and cfg.search.a_betas == [0.0, 0.99]
    assert cfg.search.epochs == 4 and cfg.reg.size is True
    assert resolve(preset="tiny", overrides={"subset": None}).subset is None  # null where the default is null


def test_a_checkpoint_of_another_run_is_a_one_line_error(data, search_run, tmp_path, capsys):
    other = tmp_path / "other"
    args = ["search", "--data-dir", str(data), "--out", str(other), "--epochs", "1"]
    assert main([*args, "--channels", "8", "--layers", "3", "--batch-size", "16", "--no-progress"]) == 0
    shutil.copy(other / "checkpoint.pt", search_run / "checkpoint.pt")
    refused(capsys, ["search", "--resume", str(search_run), "--no-progress"], "checkpoint.pt", "does not fit this run")
    torch.save({"epoch": 0, "job": {"method": {}}, "rng": rng_state()}, search_run / "checkpoint.pt")
    refused(capsys, ["search", "--resume", str(search_run), "--no-progress"], "checkpoint.pt", "KeyError")


def test_an_unwritable_out_is_a_one_line_error(data, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    args = ["search", "--data-dir", str(data), "--out", str(tmp_path / "file" / "r"), "--epochs", "1", *TINY]
    refused(capsys, args, str(tmp_path / "file"))


def test_a_full_disk_is_a_one_line_error(data, tmp_path, capsys, monkeypatch):
    def full(self, state):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.file("checkpoint.pt")))

    monkeypatch.setattr(RunDir, "save_checkpoint", full)
    args = ["search", "--data-dir", str(data), "--out", str(tmp_path / "r"), "--epochs", "1", *TINY]
    refused(capsys, args, "checkpoint.pt: No space left on device")
