"""The one epoch loop shared by search and retraining: resume, log, checkpoint, stop on NaN."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

import torch

from ..errors import TrainingDiverged
from ..runtime import distributed
from ..runtime.rundir import RunDir, rng_state, set_rng_state


class Job(Protocol):
    epochs: int

    def run_epoch(self, epoch: int) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present. Under torchrun: this rank's device, in the joined process group."""
    return distributed.setup(name)


def run_epochs(
    job: Job,
    run: RunDir,
    resume: bool = False,
    callbacks: list[Callable[[int, dict], None]] | None = None,
) -> list[dict]:
    """Run the job's epochs from the start or from its checkpoint; return the epoch records of this call.

    After each epoch: append to metrics.jsonl, TensorBoard, atomic checkpoint with RNG
    states, then the callbacks. A non-finite loss stops the run with the last good
    checkpoint kept. In a multi-process run only rank 0's ``run`` writes (see ``RunDir``);
    every rank resumes from rank 0's checkpoint.
    """
    start = 0
    if resume:
        ckpt = run.load_checkpoint()
        if ckpt is not None:
            job.load_state_dict(ckpt["job"])
            set_rng_state(ckpt["rng"])
            start = ckpt["epoch"] + 1
        run.truncate_log("metrics.jsonl", "epoch", start)
        run.truncate_log("steps.jsonl", "epoch", start)
        run.truncate_log("genotypes.jsonl", "epoch", start)
    records = []
    for epoch in range(start, job.epochs):
        t0 = time.perf_counter()
        record = {"epoch": epoch, **job.run_epoch(epoch)}
        record["time"] = time.perf_counter() - t0
        for k, v in record.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise TrainingDiverged(
                    f"{k} became {v} in epoch {epoch}; the run stopped, its last good checkpoint is in {run.path} "
                    "(lower the learning rate and --resume)"
                )
        run.append("metrics.jsonl", record)
        run.scalars(epoch, record)
        run.save_checkpoint({"epoch": epoch, "job": job.state_dict(), "rng": rng_state()})
        distributed.barrier()  # rank 0's checkpoint is complete before any rank goes on (or is killed)
        records.append(record)
        for cb in callbacks or []:
            cb(epoch, record)
    return records


def whole_run(run: RunDir, records: list[dict], seconds: float) -> tuple[list[dict], float]:
    """Every epoch's record and the wall time summed over a resumed run's calls (from metrics.jsonl).

    ``records`` and ``seconds`` are this call's; a resumed call alone would report only the
    epochs it ran (or none), which is not what the run's summary should say.
    """
    logged = run.read_log("metrics.jsonl") if run.write else []
    if len(logged) <= len(records):
        return records, seconds
    earlier = logged[: len(logged) - len(records)]
    return earlier + records, seconds + sum(r.get("time", 0.0) for r in earlier)
