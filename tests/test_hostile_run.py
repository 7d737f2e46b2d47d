"""Run directories under hostile conditions: doctored checkpoints, torn logs, two writers, kills at any moment.

The fault-injection test runs this file as a script (``python test_hostile_run.py kill SPEC``): a
parent that has imported diffnas forks one child per attempt, and a child dies by SIGKILL either at a
chosen moment of a chosen write (the I/O helpers of ``runtime/rundir.py`` patched) or when the parent
kills it after a random delay.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FixedBatches, batch, tiny_method, write_fake_idx

import diffnas
from diffnas.cli import main
from diffnas.engine.loop import check_finite
from diffnas.errors import DiffnasError, TrainingDiverged
from diffnas.methods import METHODS
from diffnas.runtime.rundir import LOCK, RunDir, RunDirBusy, append_line, rng_state, set_rng_state
from diffnas.sweep import load_records, run_trial

TINY = ["--channels", "4", "--layers", "3", "--batch-size", "16", "--subset", "64", "--no-progress"]
TINY += ["--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_idx(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture(scope="module")
def half_run(data, tmp_path_factory):
    """A 2-epoch search killed after its first epoch (checkpoint of epoch 0)."""
    out = tmp_path_factory.mktemp("runs") / "half"

    def kill(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        diffnas.search(
            out=out,
            dataset="fashion-mnist",
            data_dir=str(data),
            subset=64,
            device="cpu",
            progress=False,
            callbacks=[kill],
            search={"epochs": 2, "channels": 4, "layers": 3, "batch_size": 16},
        )
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# -- 1. a checkpoint cannot run code --------------------------------------------------------
class Payload:
    """Unpickling this creates ``marker``: what a doctored checkpoint could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_doctored_checkpoint_is_refused_without_running_it(half_run, tmp_path, capsys, how):
    run = copy_run(half_run, tmp_path / "run")
    marker = tmp_path / "marker"
    doctored = {"epoch": 0, "job": Payload(marker), "rng": rng_state()}
    if how == "torch.save":
        torch.save(doctored, run / "checkpoint.pt")
    else:
        (run / "checkpoint.pt").write_bytes(pickle.dumps(Payload(marker), protocol=2))
    assert main(["search", "--resume", str(run), "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert "checkpoint.pt" in err and "refused" in err
    assert not marker.exists()
    RunDir(run).lock()  # the failed run let go of its lock


@pytest.mark.parametrize(
    "method,extra",
    [(m, {"space": "resnet20-width"} if m == "slimming" else {}) for m in METHODS]  # (slimming: BN scales)
    + [("darts", {"reg": {"latency": 0.05, "admm": 0.1}}), ("darts", {"search": {"schedule": "fimt"}})],
)
def test_a_search_checkpoint_loads_weights_only(method, extra, tmp_path):
    """Every method's state (optimizers, schedules, regularizers) and the RNG states are plain data."""
    m = tiny_method(method, **extra)
    m.epoch_start(0, 4)
    for i in range(2):
        m.step(batch(seed=i), FixedBatches(batch(seed=9)))
    torch.save({"epoch": 0, "job": {"method": m.state_dict()}, "rng": rng_state()}, tmp_path / "c.pt")
    draws = (torch.rand(3), random.random(), np.random.rand())
    back = torch.load(tmp_path / "c.pt", weights_only=True)
    tiny_method(method, **extra).load_state_dict(back["job"]["method"])
    set_rng_state(back["rng"])
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(draws[0], again[0]) and draws[1:] == again[1:]


# -- 3. torn log lines ----------------------------------------------------------------------
def test_torn_last_lines_and_temp_files_do_not_block_resume(half_run, tmp_path, capsys):
    run = copy_run(half_run, tmp_path / "run")
    for name, torn in [("metrics.jsonl", '{"epoch": 1, "train_lo'), ("steps.jsonl", '{"epoch": 1, "st')]:
        with open(run / name, "a") as f:
            f.write(torn)
    with open(run / "genotypes.jsonl", "a") as f:  # a whole record, its newline not yet written
        f.write('{"epoch": 1, "genotype": {}}')
    (run / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    assert [r["epoch"] for r in RunDir(run).read_log("metrics.jsonl")] == [0]
    assert main(["search", "--resume", str(run), "--no-progress"]) == 0, capsys.readouterr().err
    for name in ("metrics.jsonl", "steps.jsonl", "genotypes.jsonl"):
        records = [json.loads(x) for x in (run / name).read_text().splitlines()]  # every line whole
        assert sorted({r["epoch"] for r in records}) == [0, 1]
    assert not list(run.glob(".*.tmp")) and not (run / LOCK).exists()


def test_a_bad_line_inside_a_log_is_a_one_line_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\nnot json\n{"epoch": 1}\n')
    with pytest.raises(DiffnasError, match=r"metrics\.jsonl, line 2"):
        RunDir(tmp_path).read_log("metrics.jsonl")


def test_an_append_after_a_torn_line_stays_a_line_of_its_own(tmp_path):
    path = tmp_path / "trials.jsonl"
    path.write_text('{"name": "a", "status": "ok"}\n{"name": "b", "sta')
    append_line(path, json.dumps({"name": "c", "status": "ok"}))
    assert set(load_records(tmp_path)) == {"a", "c"}


# -- 4. one writer per run directory --------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_holder(data, tmp_path, capsys):
    out = tmp_path / "run"
    holder = RunDir(out)
    holder.lock()
    (out / "config.yaml").write_text("mine\n")
    try:
        code = main(["search", "--data-dir", str(data), "--out", str(out), "--epochs", "1", *TINY])
        assert code == 2
        err = one_line_error(capsys)
        assert f"pid {os.getpid()}" in err and socket.gethostname() in err
        assert (out / "config.yaml").read_text() == "mine\n"
        with pytest.raises(RunDirBusy):
            RunDir(out).lock()
    finally:
        holder.close()
    assert not (out / LOCK).exists()
    RunDir(out).lock()  # free again


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp_path.joinpath(LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    run = RunDir(tmp_path)
    run.lock()
    assert f"pid {dead.pid}" in capsys.readouterr().err
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    run.close()
    assert not (tmp_path / LOCK).exists()


def test_ranks_that_do_not_write_do_not_lock(tmp_path):
    RunDir(tmp_path / "r", write=False).lock()
    assert not (tmp_path / "r").exists()


# -- 7. smaller things ----------------------------------------------------------------------
def test_nan_before_the_first_checkpoint_says_there_is_none(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(TrainingDiverged, match="nothing to resume") as exc:
        check_finite(float("nan"), "training loss at epoch 0 step 3", run)
    assert "last good checkpoint" not in str(exc.value)
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        check_finite(float("inf"), "training loss at epoch 2 step 3", run)


def test_resume_of_a_missing_directory_does_not_create_it(tmp_path, capsys):
    for command in ("search", "train", "run"):
        assert main([command, "--resume", str(tmp_path / "nope"), "--no-progress"]) == 2
        assert "nope" in one_line_error(capsys)
        assert not (tmp_path / "nope").exists()


def test_a_trial_killed_by_a_signal_records_the_signal(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    spec = {"out": str(tmp_path / "sweep"), "base_args": [], "sets": [], "search_only": True}
    spec.update(cpus_per_trial=1, gpus_per_trial=0)
    trial = {"name": "t", "method": "darts", "seed": 0, "sets": [], "overrides": {}}
    rec = run_trial(spec, trial, {"PYTHONPATH": str(site)})
    assert rec["status"] == "failed" and rec["error"] == "killed by SIGKILL" and rec["returncode"] == -9


# -- 8. kills at any moment -----------------------------------------------------------------
def test_kills_at_random_moments_then_resume_equal_an_uninterrupted_run(data, tmp_path):
    spec = {"data": str(data), "out": str(tmp_path), "seed": 20240611, "kills": 20, "timed": 4}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, __file__, "kill", json.dumps(spec)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(report)
    assert report["kills"] >= spec["kills"] + spec["timed"]
    assert report["equal"] == report["chains"] and report["chains"] >= 1


STAGES = {"atomic": ("before", "torn", "unrenamed", "after"), "append": ("before", "torn", "after")}


def _kill_harness(spec: dict) -> dict:
    """Chains of attempts (a fresh run, then resumes) into one directory each, every attempt but the
    last killed; each chain's result compared with an uninterrupted run's."""
    import tempfile
    import time

    import torch.utils.tensorboard  # noqa: F401 - imported once here, not in every child

    import diffnas.api
    import diffnas.runtime.rundir as rd

    torch.set_num_threads(1)
    diffnas.api.draw = lambda run_dir, genotype: []  # pictures: seconds of matplotlib per run, no run state
    rng = random.Random(spec["seed"])
    out = Path(spec["out"])
    hit: dict = {}  # what killed an attempt: "atomic:torn", "append:after", "timer", ...
    state = {"n": 0, "kill": None}  # kill: (event number, a number in [0, 1) that picks the stage)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def event(kind):
        """The stage of this write to die at, if it is the chosen one."""
        state["n"] += 1
        k = state["kill"]
        if not k or k[0] != state["n"]:
            return None
        stage = STAGES[kind][int(k[1] * len(STAGES[kind]))]
        (out / "last_stage").write_text(f"{kind}:{stage}")
        return stage

    orig_atomic, orig_append = rd.atomic_write_bytes, rd.append_line

    def atomic(path, write):
        stage = event("atomic")
        if stage == "before":
            die()
        if stage in ("torn", "unrenamed"):
            import io

            buf = io.BytesIO()
            write(buf)
            data = buf.getvalue()
            fd, _ = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.", suffix=".tmp")
            os.write(fd, data[: len(data) // 2] if stage == "torn" else data)
            os.fsync(fd)
            die()
        orig_atomic(path, write)
        if stage == "after":
            die()

    def append(path, line, **kw):
        stage = event("append")
        if stage == "before":
            die()
        if stage == "torn":
            with open(path, "ab") as f:
                f.write(line.encode()[: len(line) // 2])
            die()
        orig_append(path, line, **kw)
        if stage == "after":
            die()

    rd.atomic_write_bytes, rd.append_line = atomic, append

    def attempt(run: Path, kill=None, delay=None) -> int:
        """One process: a fresh run, or a resume if the directory has a config (as a sweep does)."""
        resume = (run / "config.yaml").is_file()
        argv = ["search", "--resume", str(run), "--no-progress"] if resume else fresh(run)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            state["n"], state["kill"] = 0, kill
            try:
                code = main(argv)
            except BaseException:  # noqa: BLE001
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        if delay is not None:
            time.sleep(delay)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    def fresh(run):
        return ["search", "--data-dir", spec["data"], "--out", str(run), "--epochs", "3", *TINY]

    # the uninterrupted run, here: the children start warm (imports, first ops) and only their own work
    # counts; one intra-op thread (OMP_NUM_THREADS=1) leaves no thread pool to break the forks
    ref = out / "reference"
    t0 = time.perf_counter()
    assert main(fresh(ref)) == 0
    ref_seconds = time.perf_counter() - t0
    events = state["n"]

    kills, chains, equal = 0, 0, 0
    timed_left = spec["timed"]
    target = spec["kills"] + spec["timed"]
    while kills < target:
        run = out / f"chain{chains}"
        chains += 1
        code = None
        for _ in range(min(12, target - kills)):  # up to 12 killed attempts in this chain
            (out / "last_stage").unlink(missing_ok=True)
            if timed_left and rng.random() < 0.3:
                code = attempt(run, delay=rng.uniform(0.0, ref_seconds))
                what = "timer"
            else:
                # a resume writes config.yaml, truncates 3 logs, then 5 writes per epoch: the first 12 events
                # of an attempt are the resume itself and one or two epochs
                code = attempt(run, kill=(rng.randint(1, 12), rng.random()))
                what = (out / "last_stage").read_text() if (out / "last_stage").is_file() else None
            if code == 0:
                break
            assert code == -signal.SIGKILL, f"{run}: an attempt failed with {code}"
            kills += 1
            timed_left -= what == "timer"
            hit[what] = hit.get(what, 0) + 1
        if code != 0:
            assert attempt(run) == 0, f"{run}: the finishing resume failed"
        equal += _same_run(ref, run)
    return {"kills": kills, "chains": chains, "equal": equal, "events": events, "stages": hit}


def _same_run(a: Path, b: Path) -> bool:
    ca, cb = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (a, b))

    def same(x, y):
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
        if isinstance(x, dict):
            return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, (list, tuple)):
            return len(x) == len(y) and all(same(p, q) for p, q in zip(x, y))
        return x == y or (x != x and y != y)

    def log(run, name):
        return [{k: v for k, v in r.items() if k != "time"} for r in RunDir(run).read_log(name)]

    logs = ("metrics.jsonl", "steps.jsonl", "genotypes.jsonl")
    return (
        same(ca, cb)
        and all(log(a, n) == log(b, n) and len(log(a, n)) for n in logs)
        and (a / "genotype.json").read_text() == (b / "genotype.json").read_text()
        and not list(b.glob(".*.tmp"))
        and not (b / LOCK).exists()
    )


if __name__ == "__main__" and sys.argv[1:2] == ["kill"]:
    print(json.dumps(_kill_harness(json.loads(sys.argv[2]))))
