"""What search and retraining share, written once: the run wrapper, the epoch loop, the NaN guard, evaluation.

``run_job`` opens the run directory, runs (or resumes) the job's epochs and returns
what a summary needs; ``run_epochs`` logs, checkpoints and guards every epoch;
``check_finite`` is the one place a non-finite loss stops a run; ``evaluate_split`` is
the one evaluation over a data split, each rank of a multi-process run taking its part.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

import torch

from ..data import eval_batches
from ..errors import TrainingDiverged
from ..runtime import distributed
from ..runtime.rundir import CHECKPOINT, RunDir, rng_state, set_rng_state
from ..runtime.system import peak_memory_mb, reset_peak_memory


class Job(Protocol):
    epochs: int
    device: torch.device

    def run_epoch(self, epoch: int) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present. Under torchrun: this rank's device, in the joined process group."""
    return distributed.setup(name)


def check_finite(value: float, what: str, run: RunDir) -> None:
    """Stop the run on a NaN or infinite ``value``; the last good checkpoint (if any yet) stays in ``run``."""
    if isinstance(value, float) and not math.isfinite(value):
        if run.file(CHECKPOINT).is_file():
            where = f"its last good checkpoint is in {run.path} (lower the learning rate and --resume)"
        else:
            where = "before its first checkpoint, so there is nothing to resume (lower the learning rate)"
        raise TrainingDiverged(f"{what} became {value}; the run stopped, {where}")


def evaluate_split(evaluate: Callable, x, y, batch_size: int, prefix: str, **batch_args) -> dict:
    """``evaluate(batches) -> {"loss": sum, metric: sum, "n": count}`` on this rank's part of (x, y);
    the counts summed over the ranks, returned as means named ``<prefix>_loss``, ``<prefix>_<metric>``."""
    part = distributed.shard_range(len(y))
    return evaluate_batches(evaluate, eval_batches(x[part], y[part], batch_size, **batch_args), prefix)


def evaluate_batches(evaluate: Callable, batches, prefix: str) -> dict:
    """``evaluate(batches)`` on this rank's batches (of any pipeline), the counts summed over the ranks."""
    sums = evaluate(batches)
    keys = sorted(k for k in sums if k != "n")
    totals = distributed.sum_values([sums[k] for k in keys] + [sums["n"]])
    n = max(totals[-1], 1)
    return {f"{prefix}_{k}": v / n for k, v in zip(keys, totals)}


def run_epochs(
    job: Job,
    run: RunDir,
    resume: bool = False,
    callbacks: list[Callable[[int, dict], None]] | None = None,
    logs: tuple[str, ...] = ("metrics.jsonl",),
) -> list[dict]:
    """Run the job's epochs from the start or from its checkpoint; return the epoch records of this call.

    After each epoch: append to metrics.jsonl, TensorBoard, atomic checkpoint with RNG
    states, then the callbacks. In a multi-process run only rank 0's ``run`` writes (see
    ``RunDir``); every rank resumes from rank 0's checkpoint.
    """
    start = 0
    if resume:
        ckpt = run.load_checkpoint()
        if ckpt is not None:
            job.load_state_dict(ckpt["job"])
            set_rng_state(ckpt["rng"])
            start = ckpt["epoch"] + 1
        for name in logs:
            run.truncate_log(name, "epoch", start)
    records = []
    for epoch in range(start, job.epochs):
        t0 = time.perf_counter()
        record = {"epoch": epoch, **job.run_epoch(epoch)}
        record["time"] = time.perf_counter() - t0
        for k, v in record.items():
            check_finite(v, f"{k} in epoch {epoch}", run)
        run.append("metrics.jsonl", record)
        run.scalars(epoch, record)
        run.save_checkpoint({"epoch": epoch, "job": job.state_dict(), "rng": rng_state()})
        distributed.barrier()  # rank 0's checkpoint is complete before any rank goes on (or is killed)
        records.append(record)
        for cb in callbacks or []:
            cb(epoch, record)
    return records


def run_job(make_job: Callable[[RunDir], Job], cfg, out, resume: bool, callbacks, logs: tuple[str, ...], finish):
    """Open the run directory, build the job, run or resume it, then ``finish(job, run, records, seconds,
    peak MB)`` (the summary); returns what ``finish`` returns.

    A new run starts from empty logs; ``records`` and ``seconds`` cover the whole run,
    also when this call only resumed it (read back from metrics.jsonl). The run directory
    is locked against other writers from before the first write until the summary is written.
    """
    run = RunDir(out, write=distributed.is_main())  # a multi-process run: only rank 0 writes
    run.lock(create=not resume)
    try:
        if not resume and run.write:
            for name in (*logs, CHECKPOINT):
                run.file(name).unlink(missing_ok=True)
        run.write_config(cfg.to_plain())
        resolve_device(cfg.device)  # under torchrun: join the group and select this rank's GPU before touching CUDA
        reset_peak_memory()
        t0 = time.perf_counter()
        job = make_job(run)
        records = run_epochs(job, run, resume=resume, callbacks=callbacks, logs=logs)
        records, seconds = whole_run(run, records, time.perf_counter() - t0)
        return finish(job, run, records, seconds, peak_memory_mb(job.device))
    finally:
        run.close()


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
