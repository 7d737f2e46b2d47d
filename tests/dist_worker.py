"""One rank of the 2-process checks in test_distributed.py; run as
``python -m torch.distributed.run --nproc_per_node 2 tests/dist_worker.py OUT DATA``.

Each rank writes only under ``OUT/rank<r>/`` (its own files, for the test to compare) and
searches into run directories of its own (``OUT/runs<r>/...``): the test then checks that
rank 1's run directories were never created, i.e. that only rank 0 wrote.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import torch
from helpers import FixedBatches, batch, tiny_method

import diffnas
from diffnas.catalog import resolve
from diffnas.runtime import distributed

# the modules (the package exports functions of the same names)
engine_search = importlib.import_module("diffnas.engine.search")
engine_train = importlib.import_module("diffnas.engine.train")

# first-step gradients: learning rates ~0 so that every gradient of the step is taken at the initial point
GRAD_METHODS = ("darts", "darts-cd", "nasp", "rarts")
FROZEN = {"w_lr": 1e-30, "a_lr": 0.0, "grad_clip": 0, "nodes": 2}
# first-step gradients at the paper's weight learning rate (DARTS's virtual step, RARTS's w before y and alpha)
UNROLLED_METHODS = ("darts2", "rarts")
UNROLLED = {"a_lr": 0.0, "grad_clip": 0, "nodes": 2}

# every method searches 2 epochs of a few steps; both ranks must end bitwise equal
SEARCH_METHODS = (
    "darts",
    "darts2",
    "darts-cd",
    "max-alpha",
    "nasp",
    "pc-darts",
    "idarts",
    "rarts",
    "milenas",
    "darts-prime",
)
SEARCH = {"epochs": 2, "channels": 4, "layers": 3, "nodes": 2, "batch_size": 8}
EXTRA = {
    "darts-cd": {"warmup_epochs": 1},  # one warm-up epoch, one restricted epoch
    "max-alpha": {"warmup_epochs": 1},
    "pc-darts": {"arch_start_epoch": 0},
    "idarts": {"arch_start_epoch": 0, "idarts_start_epoch": 0, "idarts_lambda": 0.5},
    # Fisher-triggered steps in a few steps; a val split (8 of the 32 images) that holds a batch of 8
    "darts-prime": {"schedule": "fimt:r=2,h0=10", "train_portion": 0.75},
}

jobs: list = []


class _Recorded:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        jobs.append(self)


def record_jobs() -> None:
    """Keep every search and train job in ``jobs`` (to save the ranks' final states)."""
    engine_search.SearchJob = type("SearchJob", (_Recorded, engine_search.SearchJob), {})
    engine_train.TrainJob = type("TrainJob", (_Recorded, engine_train.TrainJob), {})


def first_step_grads(method: str, search: dict) -> dict:
    """The gradients one 2-process step installs, each rank on its half of a global batch of 8."""
    m = tiny_method(method, seed=0, search=search)
    part = slice(4 * distributed.rank(), 4 * (distributed.rank() + 1))
    (xt, yt), (xv, yv) = batch(8, seed=1), batch(8, seed=2)
    m.step((xt[part], yt[part]), FixedBatches((xv[part], yv[part])))
    params = list(m.weights) + list(m.arch) + (list(m.weights_y) if method == "rarts" else [])
    return {"grads": [None if p.grad is None else p.grad.clone() for p in params]}


def main(out: Path, data: str) -> None:
    torch.set_num_threads(1)
    record_jobs()
    distributed.setup("cpu")  # what the engine does; the tiny methods below run before any engine call
    r = distributed.rank()
    mine = out / f"rank{r}"
    mine.mkdir(parents=True, exist_ok=True)

    torch.save({m: first_step_grads(m, FROZEN) for m in GRAD_METHODS}, mine / "grads.pt")
    torch.save({m: first_step_grads(m, UNROLLED) for m in UNROLLED_METHODS}, mine / "unrolled.pt")

    runs = out / f"runs{r}"  # rank 1 writes nothing, so runs1 must never appear
    common = dict(dataset="fashion-mnist", data_dir=data, subset=32, progress=False, seed=3)
    states = {}
    for method in SEARCH_METHODS:
        jobs.clear()
        search = {**SEARCH, **EXTRA.get(method, {})}
        if method == "darts":  # through the API (it also draws: rank 0 only)
            s = diffnas.search(method=method, out=runs / method, search=search, space="darts", **common)
        else:  # the engine alone: no pictures, faster
            data = {k: v for k, v in common.items() if k != "progress"}
            cfg = resolve(method, overrides={**data, "space": "darts", "search": search})
            s = engine_search.search(cfg, runs / method, progress=False)
        states[method] = {"state": jobs[0].method.state_dict(), "genotype": str(s.genotype), "val_acc": s.val_acc}
    jobs.clear()
    t = diffnas.train(
        diffnas.Genotype.load(out / "runs0" / "darts" / "genotype.json"),
        out=runs / "train",
        train={"epochs": 1, "channels": 4, "layers": 3, "batch_size": 8, "cutout": 0},
        **common,
    )
    states["train"] = {"state": jobs[0].state_dict(), "test_acc": t.test_acc}

    # resume: both ranks are killed after epoch 0 and resume from rank 0's checkpoint (one shared run directory)
    shared = out / "resume"
    cfg = dict(method="darts", search=SEARCH, **common)

    def kill(epoch, record):
        if epoch == 0:
            raise KeyboardInterrupt

    try:
        diffnas.search(out=shared, callbacks=[kill], **cfg)
    except KeyboardInterrupt:
        pass
    jobs.clear()
    diffnas.search(resume=shared, progress=False)
    states["resumed"] = {"state": jobs[0].method.state_dict()}
    torch.save(states, mine / "states.pt")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(Path(sys.argv[1]), sys.argv[2])
