"""Data parallelism under torchrun, on the CPU with Gloo: 2 processes (``tests/dist_worker.py``, the CLI).

(1) after a search of every method (and a retraining, and a killed-and-resumed search)
both ranks hold bitwise-identical weights, alphas, BN statistics and optimizer states;
(2) the gradients a 2-process step installs are the mean of the two single-process
gradients on the two halves of the global batch (BatchNorm's batch statistics are per
half in both); (3) only rank 0 writes; (4) ``torch.distributed.run -m diffnas run``
finishes with complete run directories.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dist_worker
import pytest
import torch
from helpers import FixedBatches, batch, tiny_method, write_fake_idx

import diffnas
from diffnas.runtime import distributed

HERE = Path(__file__).parent
LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def launch(args, cwd, timeout=240) -> subprocess.CompletedProcess:
    proc = subprocess.run([*LAUNCH, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_idx(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture(scope="module")
def worker(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    launch([str(HERE / "dist_worker.py"), str(out), str(data)], cwd=out)
    return out


def flat(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from flat(v, f"{prefix}.{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from flat(v, f"{prefix}[{i}]")
    else:
        yield prefix, tree


def differences(a, b) -> list[str]:
    fa, fb = dict(flat(a)), dict(flat(b))
    assert fa.keys() == fb.keys()
    return [k for k in fa if not (torch.equal(fa[k], fb[k]) if torch.is_tensor(fa[k]) else fa[k] == fb[k])]


def test_single_process_has_no_process_group():
    assert not distributed.active() and distributed.world_size() == 1 and distributed.is_main()
    g = [torch.ones(2), None]
    assert distributed.average_gradients([torch.zeros(2), torch.zeros(3)], g)[0] is g[0]
    assert distributed.shard(8) == slice(0, 8)


def test_batch_stream_parts_make_up_the_single_process_batch():
    """Each rank draws and augments the whole global batch (same RNG use everywhere) and keeps its part."""
    from diffnas.data import Augment, BatchStream

    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(40)
    common = dict(mean=[0.5], std=[0.25], seed=7, augment=Augment(crop_padding=1, flip=True, cutout=2))
    streams = [BatchStream(x, y, torch.arange(30), 8, part=part, **common) for part in (None, (0, 2), (1, 2))]
    for _ in range(5):  # crosses an epoch (3 steps of 8 from 30, then a new order)
        outs, states = [], []
        for s in streams:
            torch.manual_seed(11)
            outs.append(s.next())
            states.append(torch.get_rng_state())
        (xw, yw), (x0, y0), (x1, y1) = outs
        assert torch.equal(torch.cat([x0, x1]), xw) and torch.equal(torch.cat([y0, y1]), yw) and len(y0) == 4
        assert torch.equal(states[0], states[1]) and torch.equal(states[0], states[2])


def test_ranks_end_bitwise_identical(worker):
    a = torch.load(worker / "rank0" / "states.pt", weights_only=True)
    b = torch.load(worker / "rank1" / "states.pt", weights_only=True)
    assert set(a) == {*dist_worker.SEARCH_METHODS, "train", "resumed"}
    for name in a:
        assert differences(a[name], b[name]) == [], name
    # every method moved its alphas, and DARTS-PRIME's Fisher-triggered steps happened (the same on both ranks)
    for name in dist_worker.SEARCH_METHODS:
        assert a[name]["state"]["arch_steps"] > 0, name
    # a search killed after epoch 0 and resumed by both ranks from rank 0's checkpoint equals the uninterrupted one
    assert differences(a["resumed"]["state"], a["darts"]["state"]) == []


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps: more threads only wait for each other on a busy machine
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", dist_worker.GRAD_METHODS)
def test_averaged_gradient_is_the_mean_of_the_half_batch_gradients(worker, method, one_thread):
    ranks = [torch.load(worker / f"rank{r}" / "grads.pt", weights_only=True)[method]["grads"] for r in (0, 1)]
    assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(*ranks))
    halves = []
    for r in (0, 1):  # a single process on each half of the global batch, as the worker's ranks
        m = tiny_method(method, seed=0, search=dist_worker.FROZEN)
        part = slice(4 * r, 4 * (r + 1))
        (xt, yt), (xv, yv) = batch(8, seed=1), batch(8, seed=2)
        m.step((xt[part], yt[part]), FixedBatches((xv[part], yv[part])))
        params = list(m.weights) + list(m.arch) + (list(m.weights_y) if method == "rarts" else [])
        halves.append([None if p.grad is None else p.grad.clone() for p in params])
    assert len(ranks[0]) == len(halves[0])
    n_arch = len(m.arch)
    checked = 0
    for i, (got, h0, h1) in enumerate(zip(ranks[0], *halves)):
        assert (got is None) == (h0 is None) == (h1 is None), i
        if got is None:
            continue
        torch.testing.assert_close(got, (h0 + h1) / 2, rtol=1e-4, atol=1e-6)
        checked += 1
    assert checked > n_arch  # weights and alphas
    # the halves differ: the check would catch a missing or a wrong reduction
    assert any(h0 is not None and (h0 - h1).abs().max() > 1e-3 for h0, h1 in zip(*halves))


def split_loss(method, halves: int = 2):
    """Make ``method``'s loss the mean of the losses of the batch's halves, each with its own BN statistics:
    the objective a 2-process run descends, in one process."""
    plain = type(method).loss

    def loss(batch, net=None):
        x, y = batch
        parts = [plain(method, (x[i], y[i]), net) for i in torch.arange(len(y)).chunk(halves)]
        return sum(p[0] for p in parts) / halves, torch.cat([p[1] for p in parts])

    method.loss = loss
    return method


@pytest.mark.parametrize("method", dist_worker.UNROLLED_METHODS)
def test_unrolled_step_equals_the_split_batch_step(worker, method, one_thread):
    """DARTS second order (virtual step, finite-difference Hessian-vector product) and RARTS (w, then y,
    then alpha at the new w and y): the 2-process step equals one process on the whole batch whose loss
    is the mean of the two halves' losses, so the virtual step and v are averaged where they must be."""
    got = torch.load(worker / "rank0" / "unrolled.pt", weights_only=True)[method]["grads"]
    (xt, yt), (xv, yv) = batch(8, seed=1), batch(8, seed=2)
    results = []
    for split in (True, False):  # False: one rank's half alone, to show the reduction matters
        m = tiny_method(method, seed=0, search=dist_worker.UNROLLED)
        if split:
            m = split_loss(m)
            m.step((xt, yt), FixedBatches((xv, yv)))
        else:
            m.step((xt[:4], yt[:4]), FixedBatches((xv[:4], yv[:4])))
        params = list(m.weights) + list(m.arch) + (list(m.weights_y) if method == "rarts" else [])
        results.append([None if p.grad is None else p.grad.clone() for p in params])
    ref, half = results
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert (g is None) == (r is None), i
        if g is not None:
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    arch = slice(len(m.weights), len(m.weights) + len(m.arch))
    assert any(g is not None for g in got[arch])
    assert any(g is not None and (g - h).abs().max() > 1e-3 for g, h in zip(got, half))


def test_only_rank_0_writes(worker):
    assert not (worker / "runs1").exists()
    for method in dist_worker.SEARCH_METHODS:
        run = worker / "runs0" / method
        for name in ("config.yaml", "metrics.jsonl", "steps.jsonl", "genotypes.jsonl", "genotype.json"):
            assert (run / name).is_file(), (method, name)
        assert (run / "summary.json").is_file() and (run / "checkpoint.pt").is_file()
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert (worker / "runs0" / "train" / "result.json").is_file()


def test_logged_evaluation_is_the_whole_val_split(worker, data, tmp_path, one_thread):
    """Each rank evaluated half of the val split; the logged numbers equal one process evaluating all of it."""
    import importlib

    from diffnas.catalog import resolve
    from diffnas.runtime.rundir import RunDir

    engine_search = importlib.import_module("diffnas.engine.search")
    engine_loop = importlib.import_module("diffnas.engine.loop")
    run = worker / "runs0" / "darts"
    cfg = resolve(
        "darts",
        overrides={"dataset": "fashion-mnist", "data_dir": str(data), "subset": 32, "seed": 3, "space": "darts"}
        | {"search": dist_worker.SEARCH},
    )
    job = engine_search.SearchJob(cfg, RunDir(tmp_path, write=False), progress=False)
    job.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True)["job"])
    x, y = job.data.train_x[job.val_idx], job.data.train_y[job.val_idx]
    evaluation = engine_loop.evaluate_split(
        job.method.evaluate, x, y, 4 * cfg.search.batch_size, "val", mean=job.data.mean, std=job.data.std, device="cpu"
    )
    logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["val_acc"] == evaluation["val_acc"]
    assert logged["val_loss"] == pytest.approx(evaluation["val_loss"], rel=1e-5)


def test_torchrun_cli_run_end_to_end(data, tmp_path):
    out = tmp_path / "R"
    args = ["-m", "diffnas", "run", "--preset", "tiny", "--device", "cpu", "--no-progress"]
    args += ["--data-dir", str(data), "--subset", "64", "--set", "search.nodes=2", "--out", str(out)]
    proc = launch(args, cwd=tmp_path)
    assert proc.stdout.count("== search ==") == 1 and proc.stdout.count("== retrain ==") == 1  # rank 0 prints
    search, train = out / "search", out / "train"
    for name in ("config.yaml", "metrics.jsonl", "steps.jsonl", "genotypes.jsonl", "genotype.json", "summary.json"):
        assert (search / name).is_file(), name
    assert (search / "checkpoint.pt").is_file() and any((search / "tb").iterdir())
    for name in ("config.yaml", "metrics.jsonl", "genotype.json", "result.json", "checkpoint.pt"):
        assert (train / name).is_file(), name
    metrics = [json.loads(x) for x in (search / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1] and all(0 <= m["val_acc"] <= 1 for m in metrics)
    # the logged evaluation is the whole val split's (each rank evaluates half; counts are summed):
    # the val split of 32 images gives accuracies in steps of 1/32
    assert all(abs(m["val_acc"] * 32 - round(m["val_acc"] * 32)) < 1e-9 for m in metrics)
    steps = [json.loads(x) for x in (search / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 2 * 1  # 32 train images, global batch 32: one step per epoch
    assert diffnas.Genotype.load(search / "genotype.json") == diffnas.Genotype.load(train / "genotype.json")
    result = json.loads((train / "result.json").read_text())
    assert 0 <= result["test_acc"] <= 1
