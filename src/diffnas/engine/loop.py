"""What search and retraining share, written once: the run wrapper, the epoch loop, the NaN guard, evaluation.

``run_job`` opens the run directory, runs (or resumes) the job's epochs and returns
what a summary needs; ``run_epochs`` logs, checkpoints and guards every epoch;
``check_finite`` is the one place a non-finite loss stops a run; ``evaluate_split`` is
the one evaluation over a data split, each rank of a multi-process run taking its part.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
import torch.nn as nn
from tqdm import tqdm

from ..data import ImageDataset, download_dataset, download_folder, eval_batches, load_dataset
from ..errors import TrainingDiverged
from ..runtime import distributed
from ..runtime.rundir import CHECKPOINT, RunDir, rng_state, set_rng_state
from ..runtime.system import choose_threads, peak_memory_mb, reset_peak_memory

# files of an earlier run that a new run in the same directory (``--force``) must not leave behind
OUTPUTS = ("summary.json", "result.json", "genotype.json", "log.txt")
LONG_RUN_S = 30 * 60  # an estimate above this gets a warning with the ways to make the run shorter


class Job(Protocol):
    epochs: int
    device: torch.device
    steps_per_epoch: int

    def run_epoch(self, epoch: int, tick: Callable[[], None]) -> dict:
        """One epoch; ``tick()`` after every step (the duration estimate)."""

    def size_line(self) -> str:
        """What runs, in one line: the network's parameters, steps per epoch, epochs."""

    def epoch_note(self, record: dict) -> str:
        """What the epoch line adds for this kind of job (a search: its genotype in short form)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def load_data(cfg) -> ImageDataset:
    """The run's data set; with ``download`` (``--download``), rank 0 fetches what is missing first."""
    data_dir = cfg.data_dir
    if cfg.get("download"):
        if distributed.is_main():
            download_dataset(cfg.dataset, data_dir)
        distributed.barrier()
        data_dir = download_folder(cfg.dataset, data_dir)
    return load_dataset(cfg.dataset, data_dir, image_size=cfg.image_size, subset=cfg.subset, seed=cfg.seed)


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


def evaluate_split(
    evaluate: Callable, x, y, batch_size: int, prefix: str, progress: bool = False, **batch_args
) -> dict:
    """``evaluate(batches) -> {"loss": sum, metric: sum, "n": count}`` on this rank's part of (x, y);
    the counts summed over the ranks, returned as means named ``<prefix>_loss``, ``<prefix>_<metric>``.
    ``progress``: a bar over the batches (a whole test set takes a while on a CPU)."""
    part = distributed.shard_range(len(y))
    batches = eval_batches(x[part], y[part], batch_size, **batch_args)
    total = math.ceil(len(range(len(y))[part]) / batch_size)
    return evaluate_batches(evaluate, batches, prefix, progress, total)


def evaluate_batches(evaluate: Callable, batches, prefix: str, progress: bool = False, total=None) -> dict:
    """``evaluate(batches)`` on this rank's batches (of any pipeline), the counts summed over the ranks."""
    show = progress and distributed.is_main()
    sums = evaluate(tqdm(batches, total=total, desc=f"evaluate {prefix}", leave=False, disable=not show))
    keys = sorted(k for k in sums if k != "n")
    totals = distributed.sum_values([sums[k] for k in keys] + [sums["n"]])
    n = max(totals[-1], 1)
    return {f"{prefix}_{k}": v / n for k, v in zip(keys, totals)}


@torch.no_grad()
def reestimate_bn(nets: list[nn.Module], batches: list) -> None:
    """Running BatchNorm statistics recomputed as plain averages over ``batches`` (in eval mode otherwise:
    no drop path). After a few hundred steps the running averages still lag the weights (momentum 0.1),
    and an evaluation with them can score below chance; the papers' long runs do not need this."""
    for net in nets:
        bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not bns or not batches:
            continue
        was_training, momenta = net.training, [m.momentum for m in bns]
        net.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average of the batches
            m.train()
        for x, _ in batches:
            net(x)
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        net.train(was_training)


def below_chance_note(acc: float | None, num_classes: int, section: str, bn_batches: int) -> str:
    """Why a short run's accuracy can be below chance, said where the number is printed."""
    if acc is None or bn_batches or acc >= 1.0 / num_classes:
        return ""
    return (
        f"below chance: BatchNorm running statistics lag after few steps; "
        f"--set {section}.bn_batches=10 re-estimates them before evaluating"
    )


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class Pace:
    """Times a run's first steps and says once, in one line, how long its steps will take (a warning, with
    the ways to shorten it, when that is long). The first step (allocations, caches) is not counted."""

    def __init__(self, run: RunDir, kind: str, steps: int, measure: int = 5):
        self.run, self.kind, self.steps, self.measure = run, kind, steps, measure
        self.done, self.t0 = 0, 0.0

    def __call__(self) -> None:
        self.done += 1
        if self.done == 1:
            self.t0 = time.perf_counter()
        elif self.done == 1 + self.measure:
            per_step = (time.perf_counter() - self.t0) / self.measure
            total = per_step * self.steps
            line = (
                f"{self.kind} estimate: {duration(total)} for {self.steps} steps "
                f"({per_step:.2f} s/step, evaluations not counted)"
            )
            if total > LONG_RUN_S:
                line += "; for a first try use --preset quick (minutes), or fewer --epochs, a --subset, less --channels"
            self.run.say(line, warning=total > LONG_RUN_S)


def scale_words(section) -> str:
    """`` (C channels, L cells)`` of a config section, as far as its space has them ('' otherwise)."""
    words = [f"{section[k]} {w}" for k, w in (("channels", "channels"), ("layers", "cells")) if k in section]
    return f" ({', '.join(words)})" if words else ""


def epoch_line(kind: str, epochs: int, record: dict, note: str = "") -> str:
    """One line per epoch, as DARTS prints them: losses, accuracies, learning rate, time (and the note)."""
    parts = [f"{kind} epoch {record['epoch'] + 1}/{epochs}"]
    for split in ("train", "arch", "val", "test"):  # arch: the architecture steps' batches
        shown = [f"{k} {record[f'{split}_{k}']:.4f}" for k in ("loss", "acc", "ppl") if f"{split}_{k}" in record]
        if shown:
            parts.append(f"{split} " + " ".join(shown))
    lr = record.get("w_lr", record.get("lr"))
    if lr is not None:
        parts.append(f"lr {lr:.3g}")
    parts.append(duration(record.get("time", 0.0)))
    return " | ".join(parts + ([note] if note else []))


def run_epochs(
    job: Job,
    run: RunDir,
    resume: bool = False,
    callbacks: list[Callable[[int, dict], None]] | None = None,
    logs: tuple[str, ...] = ("metrics.jsonl",),
    kind: str = "search",
) -> list[dict]:
    """Run the job's epochs from the start or from its checkpoint; return the epoch records of this call.

    First its size and, after a few steps, its estimated duration; after each epoch: its line
    (console and log.txt), metrics.jsonl, TensorBoard, atomic checkpoint with RNG states, then
    the callbacks. In a multi-process run only rank 0's ``run`` writes (see
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
    n = torch.get_num_threads()
    threads = f", {n} thread{'s' if n != 1 else ''}" if job.device.type == "cpu" else ""
    run.say(job.size_line() + threads)
    pace = Pace(run, kind, (job.epochs - start) * job.steps_per_epoch)
    for epoch in range(start, job.epochs):
        t0 = time.perf_counter()
        record = {"epoch": epoch, **job.run_epoch(epoch, pace)}
        record["time"] = time.perf_counter() - t0
        for k, v in record.items():
            check_finite(v, f"{k} in epoch {epoch}", run)
        run.say(epoch_line(kind, job.epochs, record, job.epoch_note(record)))
        run.append("metrics.jsonl", record)
        run.scalars(epoch, record)
        run.save_checkpoint({"epoch": epoch, "job": job.state_dict(), "rng": rng_state()})
        distributed.barrier()  # rank 0's checkpoint is complete before any rank goes on (or is killed)
        records.append(record)
        for cb in callbacks or []:
            cb(epoch, record)
    return records


def _first_new(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (what creating ``path`` creates)."""
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def run_job(
    make_job: Callable[[RunDir], Job],
    cfg,
    out,
    resume: bool,
    callbacks,
    logs: tuple[str, ...],
    finish,
    kind: str = "search",
):
    """Open the run directory, build the job, run or resume it, then ``finish(job, run, records, seconds,
    peak MB)`` (the summary); returns what ``finish`` returns.

    A new run starts from empty logs; ``records`` and ``seconds`` cover the whole run,
    also when this call only resumed it (read back from metrics.jsonl). The run directory
    is locked against other writers from before the first write until the summary is written.
    A job that cannot start (bad data, an impossible batch) leaves no directory this call created.
    """
    run = RunDir(out, write=distributed.is_main())  # a multi-process run: only rank 0 writes
    created = _first_new(run.path) if run.write and not resume else None
    run.lock(create=not resume)
    try:
        if not resume and run.write:
            for name in (*logs, *OUTPUTS, CHECKPOINT):
                run.file(name).unlink(missing_ok=True)
        run.write_config(cfg.to_plain())
        device = resolve_device(cfg.device)  # under torchrun: join the group, select this rank's GPU before CUDA
        if device.type == "cpu" and distributed.world_size() == 1:  # (torchrun's keep their OMP_NUM_THREADS)
            saved = run.file(THREADS)
            text = saved.read_text().strip() if resume and saved.is_file() else ""
            before = int(text) if text.isdigit() and int(text) > 0 else None
            threads = choose_threads(before)  # the cores free now, or the count the run started with
            if run.write and before is None:
                saved.write_text(f"{threads}\n")
        reset_peak_memory()
        t0 = time.perf_counter()
        try:
            job = make_job(run)
        except BaseException:
            if created is not None:
                run.close()
                shutil.rmtree(created, ignore_errors=True)
            raise
        records = run_epochs(job, run, resume=resume, callbacks=callbacks, logs=logs, kind=kind)
        records, seconds = whole_run(run, records, time.perf_counter() - t0)
        return finish(job, run, records, seconds, peak_memory_mb(job.device))
    finally:
        run.close()


THREADS = "threads.txt"  # the CPU threads a run started with: its resumes take the same count


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
