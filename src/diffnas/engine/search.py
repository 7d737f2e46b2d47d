"""The search loop: data -> method steps -> per-epoch genotype, logs and checkpoint."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn
from tqdm import tqdm

from ..config import Config
from ..data import Augment, BatchStream, eval_batches, load_dataset, split_indices
from ..errors import TrainingDiverged
from ..methods import build_method
from ..spaces import CELL_TYPES, Genotype, get_space
from ..runtime import distributed
from .loop import resolve_device, run_epochs, whole_run
from ..runtime.rundir import RunDir, seed_everything
from ..runtime.system import peak_memory_mb, reset_peak_memory

# per-step numbers measured on the batch: averaged over the ranks of a multi-process run
DATA_KEYS = ("loss", "acc", "arch_loss", "arch_acc", "arch_loss_t", "loss_y", "acc_y")


def method_modules(method) -> list:
    """The method's networks (supernet, RARTS's second one, ...), for averaging BatchNorm statistics."""
    return [v for v in vars(method).values() if isinstance(v, nn.Module)]


def sharded_evaluate(evaluate, x, y, batch_size: int, **kwargs) -> dict:
    """``evaluate`` on this rank's part of (x, y); the ranks' means combined into the full set's means."""
    part = distributed.shard_range(len(y))
    result = evaluate(eval_batches(x[part], y[part], batch_size, **kwargs))
    if distributed.world_size() == 1:
        return result
    n = part.stop - part.start
    keys = sorted(k for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    sums = distributed.sum_values([result[k] * n for k in keys] + [n])
    return {**result, **{k: s / max(sums[-1], 1) for k, s in zip(keys, sums)}}


@dataclass
class SearchResult:
    genotype: Genotype
    run_dir: Path
    records: list
    val_acc: float
    seconds: float
    peak_memory_mb: float


class SearchJob:
    def __init__(self, cfg: Config, run: RunDir, progress: bool = True):
        self.cfg, self.run, self.progress = cfg, run, progress
        s = cfg.search
        self.device = resolve_device(cfg.device)
        distributed.check_batch_size(s.batch_size, "search.batch_size")
        seed_everything(cfg.seed)
        data = load_dataset(cfg.dataset, cfg.data_dir, image_size=cfg.image_size, subset=cfg.subset, seed=cfg.seed)
        self.data = data
        train_idx, val_idx = split_indices(len(data.train_y), s.train_portion, cfg.seed)
        pad = s.crop_padding if s.crop_padding is not None else data.image_size // 8
        augment = Augment(crop_padding=pad, flip=data.flip, cutout=s.cutout)
        part = (distributed.rank(), distributed.world_size())
        common = dict(mean=data.mean, std=data.std, augment=augment, device=self.device, part=part)
        self.train = BatchStream(data.train_x, data.train_y, train_idx, s.batch_size, seed=cfg.seed, **common)
        self.val = BatchStream(data.train_x, data.train_y, val_idx, s.batch_size, seed=cfg.seed + 1, **common)
        self.val_idx = val_idx
        self.space = get_space(cfg.space, s.nodes)
        self.method = build_method(cfg, self.space, data.in_channels, data.num_classes, self.device)
        self.epochs = s.epochs

    def run_epoch(self, epoch: int) -> dict:
        m = self.method
        steps = self.train.steps_per_epoch
        m.epoch_start(epoch, steps)
        sums: dict = {}
        show = self.progress and distributed.is_main()
        bar = tqdm(range(steps), desc=f"search {epoch + 1}/{self.epochs}", leave=False, disable=not show)
        for i in bar:
            rec = distributed.mean_values(m.step(self.train.next(), self.val), DATA_KEYS)
            loss = rec.get("loss", 0.0)
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"training loss became {loss} at epoch {epoch} step {i}; the last good checkpoint is in "
                    f"{self.run.path} (lower the learning rate and --resume)"
                )
            for k in ("loss", "acc", "arch_loss", "arch_acc"):
                if k in rec:
                    sums.setdefault(k, []).append(rec[k])
            self.run.append("steps.jsonl", {"epoch": epoch, "step": i, **rec})
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{rec.get('acc', 0):.2f}")
        lr = m.w_lr
        m.epoch_end()
        distributed.average_buffers(*method_modules(m))  # BN running statistics: the same on every rank
        x, y = self.data.train_x[self.val_idx], self.data.train_y[self.val_idx]
        evaluation = sharded_evaluate(
            m.evaluate, x, y, 4 * self.cfg.search.batch_size, mean=self.data.mean, std=self.data.std, device=self.device
        )
        genotype = m.genotype()
        self.run.append("genotypes.jsonl", {"epoch": epoch, "genotype": genotype.to_dict()})
        if self.run.write:
            genotype.save(self.run.file("genotype.json"))
        means = {f"train_{k}" if k in ("loss", "acc") else k: sum(v) / len(v) for k, v in sums.items()}
        return {
            **means,
            **evaluation,
            "w_lr": lr,
            "arch_steps": m.arch_steps,
            "genotype": str(genotype),
            "ops": {t: list(self.space.ops[t]) for t in CELL_TYPES},
            "arch_weights": {t: w for t, w in m.relax.genotype_weights().items()},
            "alphas": {t: a.detach() for t, a in m.relax.alphas.items()},
            **m.epoch_record(),
        }

    def state_dict(self) -> dict:
        return {"method": self.method.state_dict(), "train": self.train.state_dict(), "val": self.val.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state["method"])
        self.train.load_state_dict(state["train"])
        self.val.load_state_dict(state["val"])


def search(cfg: Config, out, resume: bool = False, progress: bool = True, callbacks=None) -> SearchResult:
    """Run (or resume) a search; writes the run directory and returns the final genotype."""
    run = RunDir(out, write=distributed.is_main())  # a multi-process run: only rank 0 writes
    if not resume and run.write:
        for name in ("metrics.jsonl", "steps.jsonl", "genotypes.jsonl", "checkpoint.pt"):
            run.file(name).unlink(missing_ok=True)
    run.write_config(cfg.to_plain())
    resolve_device(cfg.device)  # under torchrun: join the group and select this rank's GPU before touching CUDA
    reset_peak_memory()
    t0 = time.perf_counter()
    job = SearchJob(cfg, run, progress)
    try:
        records = run_epochs(job, run, resume=resume, callbacks=callbacks)
    finally:
        run.close()
    saved = run.write and run.file("genotype.json").is_file()
    genotype = Genotype.load(run.file("genotype.json")) if saved else job.method.genotype()
    records, seconds = whole_run(run, records, time.perf_counter() - t0)
    last = records[-1] if records else {}
    result = SearchResult(
        genotype, run.path, records, last.get("val_acc", float("nan")), seconds, peak_memory_mb(job.device)
    )
    run.write_json(
        "summary.json",
        {
            "kind": "search",
            "method": cfg.method,
            "val_acc": result.val_acc,
            "seconds": result.seconds,
            "peak_memory_mb": result.peak_memory_mb,
            "genotype": genotype.to_dict(),
        },
    )
    distributed.barrier()  # every rank sees rank 0's finished run directory before going on
    return result
