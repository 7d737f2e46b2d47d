"""End-to-end runs of the CLI and the API on tiny data: run directories, resume, errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import write_fake_idx

import diffnas
from diffnas.catalog import resolve
from diffnas.cli import main
from diffnas.methods import build_method
from diffnas.spaces import Genotype, get_space

TINY = ["--epochs", "2", "--channels", "4", "--layers", "3", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_idx(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture(scope="module")
def search_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "search"
    assert main(["search", "--method", "darts", "--data-dir", str(data), "--out", str(out), *TINY]) == 0
    return out


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_search_writes_the_run_directory(search_run):
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "steps.jsonl",
        "genotypes.jsonl",
        "genotype.json",
        "checkpoint.pt",
        "summary.json",
        "genotype_normal.png",
        "arch_weights_normal.png",
    ):
        assert (search_run / name).is_file(), name
    assert any((search_run / "tb").iterdir())
    metrics = lines(search_run / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert len(metrics[0]["arch_weights"]["normal"]) == 14 and len(metrics[0]["arch_weights"]["normal"][0]) == 8
    assert abs(sum(metrics[0]["arch_weights"]["normal"][0]) - 1) < 1e-5  # softmax rows
    assert metrics[1]["w_lr"] < metrics[0]["w_lr"]  # cosine schedule
    steps = lines(search_run / "steps.jsonl")
    assert len(steps) == 2 * 3  # 48 train images / batch 16, two epochs
    genotypes = lines(search_run / "genotypes.jsonl")
    assert Genotype.from_dict(genotypes[-1]["genotype"]) == Genotype.load(search_run)
    # the alphas moved: away from their init, and within the last epoch
    init = initial_alphas(search_run)
    for t in ("normal", "reduce"):
        last, first = torch.tensor(metrics[-1]["alphas"][t]), torch.tensor(metrics[0]["alphas"][t])
        assert (last - init[t]).abs().max() > 1e-4, t
        assert (last - first).abs().max() > 1e-4, t


def initial_alphas(run):
    """The run's alphas at initialisation: its method rebuilt from its config, seeded as the engine seeds it."""
    cfg = resolve(file=run / "config.yaml")
    torch.manual_seed(cfg.seed)
    m = build_method(cfg, get_space(cfg.space, cfg.search.nodes), 1, 10, "cpu")
    return {t: a.detach() for t, a in m.relax.alphas.items()}


def test_train_and_show(search_run, tmp_path, capsys):
    out = tmp_path / "train"
    args = [
        "train",
        "--genotype",
        str(search_run / "genotype.json"),
        "--data-dir",
        str(search_run.parent.parent),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--channels",
        "4",
        "--layers",
        "3",
        "--batch-size",
        "16",
        "--no-progress",
    ]
    cfg_data = json.loads(json.dumps(__import__("yaml").safe_load((search_run / "config.yaml").read_text())))
    args[4] = cfg_data["data_dir"]
    assert main(args) == 0
    result = json.loads((out / "result.json").read_text())
    assert 0.0 <= result["test_acc"] <= 1.0 and result["params_m"] > 0 and result["flops_m"] > 0
    assert "test acc" in capsys.readouterr().out
    assert main(["show", str(out / "genotype.json")]) == 0
    assert (out / "genotype_reduce.svg").is_file()


def test_resume_after_a_kill_equals_an_uninterrupted_run(data, tmp_path):
    common = dict(
        dataset="fashion-mnist",
        data_dir=str(data),
        progress=False,
        search={"epochs": 3, "channels": 4, "layers": 3, "batch_size": 16},
    )
    full = diffnas.search(out=tmp_path / "full", **common)

    def kill_after_first_epoch(epoch, record):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        diffnas.search(out=tmp_path / "killed", callbacks=[kill_after_first_epoch], **common)
    assert len(lines(tmp_path / "killed" / "metrics.jsonl")) == 1
    resumed = diffnas.search(resume=tmp_path / "killed", progress=False)
    assert resumed.genotype == full.genotype
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["job"]["method"]["net"]
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["job"]["method"]["net"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    full_m, res_m = lines(tmp_path / "full" / "metrics.jsonl"), lines(tmp_path / "killed" / "metrics.jsonl")
    assert [m["epoch"] for m in res_m] == [0, 1, 2]
    assert [m["val_loss"] for m in res_m] == [m["val_loss"] for m in full_m]
    # the summary describes the whole run, not only the resumed call's epochs
    assert resumed.val_acc == full.val_acc and len(resumed.records) == 3
    assert resumed.seconds >= sum(m["time"] for m in res_m)
    # resuming a finished run runs nothing and keeps the summary's numbers
    again = diffnas.search(resume=tmp_path / "killed", progress=False)
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert again.val_acc == summary["val_acc"] == full.val_acc
    assert summary["seconds"] >= sum(m["time"] for m in res_m)


def test_train_resume_equals_uninterrupted(search_run, data, tmp_path):
    g = Genotype.load(search_run)
    common = dict(
        dataset="fashion-mnist",
        data_dir=str(data),
        progress=False,
        train={"epochs": 2, "channels": 4, "layers": 3, "batch_size": 16, "auxiliary": 0.4},
    )
    full = diffnas.train(g, out=tmp_path / "full", **common)

    def kill(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        diffnas.train(g, out=tmp_path / "killed", callbacks=[kill], **common)
    resumed = diffnas.train(resume=tmp_path / "killed", progress=False)
    assert resumed.test_acc == full.test_acc
    again = diffnas.train(resume=tmp_path / "killed", progress=False)  # finished: nothing to run
    assert again.test_acc == full.test_acc
    assert again.seconds >= sum(m["time"] for m in lines(tmp_path / "killed" / "metrics.jsonl"))


def test_corrupt_data_is_a_one_line_error(tmp_path, capsys):
    bad = write_fake_idx(tmp_path / "bad", corrupt=True)
    code = main(["search", "--data-dir", str(bad), "--out", str(tmp_path / "r"), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "train-images-idx3-ubyte.gz" in err and "Traceback" not in err


def test_missing_folder_and_bad_config(tmp_path, capsys):
    assert main(["search", "--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["search", "--set", "search.nonsense=1", "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "unknown config key 'search.nonsense'" in capsys.readouterr().err
    assert main(["search", "--method", "nope", "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    (tmp_path / "g.json").write_text('{"space": "darts", "nodes": 4, "normal": [["conv_9", 0]]}')
    assert main(["train", "--genotype", str(tmp_path / "g.json"), "--out", str(tmp_path / "t"), *TINY]) == 2


def test_diverging_run_stops_with_a_clear_error(data, tmp_path, capsys):
    code = main(
        [
            "search",
            "--data-dir",
            str(data),
            "--out",
            str(tmp_path / "r"),
            "--set",
            "search.w_lr=1e30",
            "--set",
            "search.grad_clip=0",
            *TINY,
        ]
    )
    assert code == 2
    assert "became" in capsys.readouterr().err
    assert not (tmp_path / "r" / "metrics.jsonl").exists() or all(
        m["train_loss"] == m["train_loss"] for m in lines(tmp_path / "r" / "metrics.jsonl")
    )


def test_console_entry_point_lists_methods_and_spaces():
    env_src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run(
        [sys.executable, "-m", "diffnas", "methods"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": env_src, "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout
    assert "darts2" in out
    out = subprocess.run(
        [sys.executable, "-m", "diffnas", "spaces"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": env_src, "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout
    assert "nasp12" in out
