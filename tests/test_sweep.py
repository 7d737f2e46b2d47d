"""`diffnas sweep`: trial expansion, a local sweep end to end, resume, failures, the Ray backend."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import write_fake_idx

from diffnas import cli
from diffnas.errors import ConfigError
from diffnas.sweep import (
    expand_trials,
    flatten_sets,
    load_records,
    parse_grid,
    parse_list,
    split_values,
    trial_command,
)

TINY = ["--preset", "tiny", "--set", "subset=null", "--set", "image_size=8", "--set", "search.epochs=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_idx(tmp_path_factory.mktemp("fmnist"))


def sweep(out, data, *args):
    return cli.main(["sweep", "--out", str(out), "--data-dir", str(data), *TINY, *args])


def rows(out):
    with open(Path(out) / "summary.csv") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


# -- expansion ------------------------------------------------------------------------------
def test_expand_cross_product_names_and_overrides():
    grid = parse_grid(["search.a_lr=3e-4,6e-4", "reg.size=0,0.01"])
    assert grid == {"search.a_lr": ["3e-4", "6e-4"], "reg.size": ["0", "0.01"]}
    trials = expand_trials(["darts", "rarts"], [0, 1], grid)
    assert len(trials) == 2 * 2 * 2 * 2
    names = [t.name for t in trials]
    assert len(set(names)) == len(names)
    assert names[:3] == [
        "darts__search.a_lr=3e-4__reg.size=0__s0",
        "darts__search.a_lr=3e-4__reg.size=0__s1",
        "darts__search.a_lr=3e-4__reg.size=0.01__s0",
    ]
    last = trials[-1]
    assert last.name == "rarts__search.a_lr=6e-4__reg.size=0.01__s1"
    assert last.sets() == ["method=rarts", "seed=1", "search.a_lr=6e-4", "reg.size=0.01"]
    assert last.overrides() == {"method": "rarts", "seed": 1, "search.a_lr": 6e-4, "reg.size": 0.01}
    # no grid, no seeds: one trial per method; nothing at all: one trial
    assert [t.name for t in expand_trials(["darts", "nasp"])] == ["darts", "nasp"]
    assert len(expand_trials()) == 1


def test_parsing_helpers_and_bad_input():
    assert split_values("a,[1, 2],{x: 1},b") == ["a", "[1, 2]", "{x: 1}", "b"]
    assert parse_list("0,1,1,2", int) == [0, 1, 2]
    assert parse_list(None) == []
    assert parse_grid(["search.schedule=alternate,every:10"])["search.schedule"] == ["alternate", "every:10"]
    assert parse_grid(["search.a_betas=[0.5,0.999],[0.9,0.999]"])["search.a_betas"] == ["[0.5,0.999]", "[0.9,0.999]"]
    for bad in (["search.a_lr"], ["=1,2"], ["search.a_lr="], ["seed=1,2"]):
        with pytest.raises(ConfigError):
            parse_grid(bad)
    with pytest.raises(ConfigError):
        parse_grid(["a=1", "a=2"])
    with pytest.raises(ConfigError):
        parse_list("0,x", int)
    with pytest.raises(ConfigError, match="share the name"):
        expand_trials(["darts"], None, {"subset": ["a b", "a/b"]})
    assert flatten_sets({"search": {"epochs": 2, "schedule": "every:10"}, "reg": {"size": 0.01}, "subset": None}) == [
        "search.epochs=2",
        'search.schedule="every:10"',
        "reg.size=0.01",
        "subset=null",
    ]


def test_trial_command_resumes_from_where_the_trial_stands(tmp_path):
    spec = {"base_args": ["--preset", "tiny"], "sets": ["seed=0"], "search_only": False}
    d = tmp_path / "t"
    assert trial_command(spec, d) == (["run", "--out", str(d), "--preset", "tiny", "--set", "seed=0"], False)
    (d / "search").mkdir(parents=True)
    (d / "search" / "config.yaml").write_text("{}")
    assert trial_command(spec, d) == (["run", "--resume", str(d)], True)
    (d / "search" / "summary.json").write_text("{}")  # search done, retraining not started
    args, resumed = trial_command(spec, d)
    assert args[:5] == ["train", "--genotype", str(d / "search"), "--out", str(d / "train")] and resumed
    (d / "train").mkdir()
    (d / "train" / "config.yaml").write_text("{}")
    assert trial_command(spec, d) == (["train", "--resume", str(d / "train")], True)
    assert trial_command({**spec, "search_only": True}, d) == (["search", "--resume", str(d / "search")], True)


# -- end to end -----------------------------------------------------------------------------
def test_local_sweep_writes_trials_and_summary_then_skips_them(tmp_path, data, capsys):
    out = tmp_path / "sw"
    assert sweep(out, data, "--method", "darts,nasp", "--seeds", "0,1", "--workers", "2") == 0
    printed = capsys.readouterr()
    records = load_records(out)
    names = ["darts__s0", "darts__s1", "nasp__s0", "nasp__s1"]
    assert sorted(records) == names
    lines = (out / "trials.jsonl").read_text().splitlines()
    assert [json.loads(x)["name"] for x in lines] == names  # one line per trial, in trial order
    for name, r in records.items():
        assert r["status"] == "ok" and r["error"] is None
        assert r["overrides"] == {"method": name.split("__")[0], "seed": int(name[-1])}
        assert 0.0 <= r["val_acc"] <= 1.0 and 0.0 <= r["test_acc"] <= 1.0
        assert r["params_m"] > 0 and r["seconds"] > 0 and r["peak_memory_mb"] > 0
        assert len(r["genotype"]["normal"]) == 8
        assert r["normal_skips"] == sum(op == "skip_connect" for op, _ in r["genotype"]["normal"])
        assert (out / name / "train" / "result.json").is_file()
        assert yaml.safe_load((out / name / "search" / "config.yaml").read_text())["seed"] == r["seed"]
    table = rows(out)
    assert sorted(table) == names
    assert table["nasp__s1"]["method"] == "nasp" and table["nasp__s1"]["status"] == "ok"
    assert float(table["darts__s0"]["test_acc"]) == pytest.approx(records["darts__s0"]["test_acc"])
    # the printed table: one row per method, ok counts
    assert "darts" in printed.out and "nasp" in printed.out and "2/2" in printed.out

    # rerun: every trial is finished, nothing is launched or rewritten
    stamps = {n: (out / n / "train" / "result.json").stat().st_mtime_ns for n in names}
    assert sweep(out, data, "--method", "darts,nasp", "--seeds", "0,1", "--workers", "2") == 0
    assert "4 of 4 trials already finished" in capsys.readouterr().err
    assert {n: (out / n / "train" / "result.json").stat().st_mtime_ns for n in names} == stamps
    assert not any((out / n / "trial.log").read_text().count("$ diffnas") > 1 for n in names)
    assert len((out / "trials.jsonl").read_text().splitlines()) == 4


def test_failed_trials_are_recorded_and_the_others_finish(tmp_path, data, capsys):
    out = tmp_path / "sw"
    # search.epochs=0 fails config validation (no process); cifar10 finds no CIFAR files (fails in its process)
    code = sweep(
        out,
        data,
        "--search-only",
        "--workers",
        "2",
        "--grid",
        "search.epochs=1,0",
        "--grid",
        "dataset=fashion-mnist,cifar10",
    )
    assert code == 2
    records = load_records(out)
    assert len(records) == 4
    ok = records["darts__search.epochs=1__dataset=fashion-mnist"]
    assert ok["status"] == "ok" and ok["test_acc"] is None and ok["val_acc"] is not None
    cifar = records["darts__search.epochs=1__dataset=cifar10"]
    assert cifar["status"] == "failed" and cifar["returncode"] == 2
    assert "\n" not in cifar["error"] and "cifar" in cifar["error"].lower()
    for name in ("darts__search.epochs=0__dataset=fashion-mnist", "darts__search.epochs=0__dataset=cifar10"):
        assert records[name]["status"] == "failed"
        assert "search.epochs must be a positive integer" in records[name]["error"]
        assert not (out / name).exists()  # never launched
    assert rows(out)[cifar["name"]]["error"] == cifar["error"]
    assert "failed: darts__search.epochs=1__dataset=cifar10" in capsys.readouterr().out


def _group(pgid: int) -> list[int]:
    """Live processes of a process group (Linux /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def test_a_killed_trial_resumes(tmp_path, data):
    out = tmp_path / "sw"
    args = [
        sys.executable,
        "-m",
        "diffnas",
        "sweep",
        "--out",
        str(out),
        "--data-dir",
        str(data),
        *TINY,
        "--set",
        "search.epochs=5",
        "--search-only",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "darts" / "search" / "checkpoint.pt"
    deadline = time.time() + 60
    while not ckpt.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # the sweep, mid-search: its trial process dies with it
    proc.wait()
    try:
        if sys.platform.startswith("linux"):
            deadline = time.time() + 10
            while _group(proc.pid) and time.time() < deadline:
                time.sleep(0.2)
            assert not _group(proc.pid), "the trial outlived its sweep"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert ckpt.is_file()
    done = len((out / "darts" / "search" / "metrics.jsonl").read_text().splitlines())
    assert 1 <= done < 5 and not (out / "trials.jsonl").exists()

    assert cli.main(args[3:]) == 0  # the same sweep again
    epochs = [json.loads(x)["epoch"] for x in (out / "darts" / "search" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2, 3, 4]
    r = load_records(out)["darts"]
    assert r["status"] == "ok" and r["resumed"] is True
    log = (out / "darts" / "trial.log").read_text()
    assert "$ diffnas search --resume" in log


# -- Ray ------------------------------------------------------------------------------------
def test_ray_backend_without_ray_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert cli.main(["sweep", "--out", str(tmp_path / "sw"), "--backend", "ray", "--preset", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'diffnas[ray]'" in err


def test_ray_backend_runs_the_trials_as_ray_tasks(tmp_path, data, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    out = tmp_path / "sw"
    try:
        code = sweep(out, data, "--backend", "ray", "--search-only", "--seeds", "0,1", "--grid", "search.epochs=1,0")
    finally:
        ray.shutdown()
    assert code == 2
    records = load_records(out)
    assert [records[f"darts__search.epochs=1__s{s}"]["status"] for s in (0, 1)] == ["ok", "ok"]
    assert records["darts__search.epochs=0__s0"]["status"] == "failed"
    assert (out / "darts__search.epochs=1__s1" / "search" / "summary.json").is_file()
    assert sorted(rows(out)) == sorted(records)


def test_local_gpu_slots_get_their_own_devices():
    from diffnas.sweep.backends import _slot_env

    assert _slot_env(0, 0, ["0", "1"]) == {}
    assert _slot_env(3, 1, []) == {}  # no GPU: nothing set
    assert [_slot_env(s, 1, ["0", "1"])["CUDA_VISIBLE_DEVICES"] for s in range(3)] == ["0", "1", "0"]
    assert [_slot_env(s, 0.5, ["0", "1"])["CUDA_VISIBLE_DEVICES"] for s in range(4)] == ["0", "0", "1", "1"]
    assert _slot_env(1, 2, ["4", "5", "6", "7"]) == {"CUDA_VISIBLE_DEVICES": "6,7"}
