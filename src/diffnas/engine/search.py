"""The search loop: data -> method steps -> per-epoch architecture, logs and checkpoint."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import Config
from ..data import Augment, BatchStream, check_batch_size, eval_batches, split_indices
from ..data.benchmark import BenchmarkTable
from ..data.stream import FolderImages, ImageStream, list_images, load_streamed
from ..methods import build_method
from ..runtime import distributed
from ..runtime.rundir import CHECKPOINT, RunDir, seed_everything
from ..spaces import Architecture, load_architecture, space_from_config
from . import monitors
from .loop import (
    below_chance_note,
    check_finite,
    evaluate_batches,
    evaluate_split,
    load_data,
    reestimate_bn,
    resolve_device,
    run_job,
    scale_words,
)
from .resume import fitting, keep_config

LOGS = ("metrics.jsonl", "steps.jsonl", "genotypes.jsonl")
log = logging.getLogger("diffnas")


@dataclass
class SearchResult:
    genotype: Architecture
    run_dir: Path
    records: list
    val_acc: float
    seconds: float
    peak_memory_mb: float
    lookup: dict = field(default_factory=dict)  # the architecture's metrics in the benchmark table, if one was given
    metric: str = "acc"  # the space's task's metric (acc, ppl) and its value on the val split
    val_score: float = float("nan")


class SearchJob:
    def __init__(self, cfg: Config, run: RunDir, progress: bool = True, table: BenchmarkTable | None = None):
        self.cfg, self.run, self.progress, self.table = cfg, run, progress, table
        s = cfg.search
        self.device = resolve_device(cfg.device)
        distributed.check_batch_size(s.batch_size, "search.batch_size")
        seed_everything(cfg.seed)
        self.space = space_from_config(cfg)
        in_channels, num_classes = self.load_data()
        self.method = build_method(cfg, self.space, in_channels, num_classes, self.device)
        # a method that trains nothing (random) has one epoch: the one that writes its architecture
        self.epochs = s.epochs if self.method.trains else 1
        self.history: list | None = None  # the collapse monitors' figures per epoch (read back on resume)
        self.warned: set = set()
        self.steps_per_epoch = self.train.steps_per_epoch
        self.bn_batches = s.get("bn_batches", 0)  # absent in runs of earlier versions
        self._short = ""  # the genotype of the last epoch, in short form

    def load_data(self) -> tuple[int, int]:
        """The train and val batch streams; returns (input channels, classes) for the supernet."""
        if self.cfg.search.get("pipeline", "memory") == "stream":
            return self.load_stream()
        cfg, s = self.cfg, self.cfg.search
        data = load_data(cfg)
        self.data = data
        train_idx, val_idx = split_indices(len(data.train_y), s.train_portion, cfg.seed)
        check_batch_size(s.batch_size, "search.batch_size", train_split=len(train_idx), val_split=len(val_idx))
        pad = s.crop_padding if s.crop_padding is not None else data.image_size // 8
        augment = Augment(crop_padding=pad, flip=data.flip, cutout=s.cutout)
        part = (distributed.rank(), distributed.world_size())
        common = dict(mean=data.mean, std=data.std, augment=augment, device=self.device, part=part)
        self.train = BatchStream(data.train_x, data.train_y, train_idx, s.batch_size, seed=cfg.seed, **common)
        self.val = BatchStream(data.train_x, data.train_y, val_idx, s.batch_size, seed=cfg.seed + 1, **common)
        self.val_idx, self.train_idx = val_idx, train_idx
        return data.in_channels, data.num_classes

    def load_stream(self) -> tuple[int, int]:
        """An image folder decoded per batch (``data/stream.py``): the weights' images from ``search.train_list``
        (or all of DIR/train), the architecture's from ``search.val_list`` (or ``train_portion`` of them)."""
        cfg, s = self.cfg, self.cfg.search
        data = load_streamed(cfg.data_dir, s.crop_size, s.workers, cfg.seed, s.get("train_list"))
        self.data = data
        if s.get("val_list"):
            paths, labels, _ = list_images(Path(cfg.data_dir) / "train", s.val_list, data.classes)
            arch_images = FolderImages(paths, labels, s.crop_size, cfg.seed + 1)
            train_idx, val_idx = torch.arange(len(data.train)), torch.arange(len(arch_images))
        else:
            arch_images = data.train
            train_idx, val_idx = split_indices(len(data.train), s.train_portion, cfg.seed)
        check_batch_size(s.batch_size, "search.batch_size", train_split=len(train_idx), val_split=len(val_idx))
        part = (distributed.rank(), distributed.world_size())
        common = dict(mean=data.mean, std=data.std, workers=s.workers, device=self.device, part=part)
        self.train = ImageStream(data.train, train_idx, s.batch_size, seed=cfg.seed, **common)
        self.val = ImageStream(arch_images, val_idx, s.batch_size, seed=cfg.seed + 1, **common)
        self.val_idx, self.train_idx = val_idx, train_idx
        self.arch_images = arch_images
        return data.in_channels, data.num_classes

    def evaluate_val(self) -> dict:
        """The supernet judged on the val split: ``val_loss``, ``val_<metric>``."""
        if hasattr(self, "arch_images"):  # streamed: this rank's part of the val images, test-transformed
            idx = self.val_idx[distributed.shard_range(len(self.val_idx))].tolist()
            batches = self.data.eval_batches(self.arch_images, idx, 4 * self.cfg.search.batch_size, self.device)
            return evaluate_batches(self.method.evaluate, batches, "val")
        x, y = self.data.train_x[self.val_idx], self.data.train_y[self.val_idx]
        return evaluate_split(
            self.method.evaluate,
            x,
            y,
            4 * self.cfg.search.batch_size,
            "val",
            progress=self.progress,
            mean=self.data.mean,
            std=self.data.std,
            device=self.device,
        )

    def size_line(self) -> str:
        params = sum(p.numel() for net in self.method.modules() for p in net.parameters()) / 1e6
        s, d = self.cfg.search, self.data
        return (
            f"search: {self.cfg.method} on {d.name} ({len(self.train_idx)} train + {len(self.val_idx)} val images, "
            f"{d.image_size}x{d.image_size}), supernet {params:.2f} M parameters{scale_words(s)}, "
            f"{self.steps_per_epoch} steps/epoch x {self.epochs} epochs, on {self.device}"
        )

    def epoch_note(self, record: dict) -> str:
        note = below_chance_note(record.get("val_acc"), self.data.num_classes, "search", self.bn_batches)
        return " | ".join(x for x in (self._short, note) if x)

    def _bn_batches(self) -> list:
        """The first ``bn_batches`` batches of the weights' split, unaugmented (the streams stay untouched)."""
        b, d = self.cfg.search.batch_size, self.data
        idx = self.train_idx[: self.bn_batches * b]
        return list(eval_batches(d.train_x[idx], d.train_y[idx], b, mean=d.mean, std=d.std, device=self.device))

    def run_epoch(self, epoch: int, tick=lambda: None) -> dict:
        m = self.method
        steps = self.train.steps_per_epoch if m.trains else 0
        m.epoch_start(epoch, steps)
        sums: dict = {}
        show = self.progress and distributed.is_main()
        bar = tqdm(range(steps), desc=f"search {epoch + 1}/{self.epochs}", leave=False, disable=not show)
        for i in bar:
            rec = distributed.mean_values(m.step(self.train.next(), self.val), m.data_keys)
            loss = rec.get("loss", 0.0)
            check_finite(loss, f"training loss at epoch {epoch} step {i}", self.run)
            for k in ("loss", "acc", "arch_loss", "arch_acc"):
                if k in rec:
                    sums.setdefault(k, []).append(rec[k])
            self.run.append("steps.jsonl", {"epoch": epoch, "step": i, **rec})
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{rec.get('acc', 0):.2f}")
            tick()
        lr = m.w_lr
        m.epoch_end()
        if self.bn_batches:
            reestimate_bn(m.modules(), self._bn_batches())
        distributed.average_buffers(*m.modules())  # BN running statistics: the same on every rank
        evaluation = self.evaluate_val() if m.trains else {}  # nothing trained (random): no supernet to judge
        genotype = m.genotype()
        self._short = genotype.short()
        self.run.append("genotypes.jsonl", {"epoch": epoch, "genotype": genotype.to_dict()})
        if self.run.write:
            genotype.save(self.run.file("genotype.json"))
        lookup = self.lookup(genotype, epoch)
        means = {f"train_{k}" if k in ("loss", "acc") else k: sum(v) / len(v) for k, v in sums.items()}
        weights = dict(m.relax.genotype_weights())
        record = {
            **means,
            **evaluation,
            "w_lr": lr,
            "arch_steps": m.arch_steps,
            "genotype": str(genotype),
            **lookup,
            "ops": {t: list(self.space.ops[t]) for t in self.space.cell_types},
            # op weights per edge, what the reports plot (a width space's scores are vectors: logged as alphas)
            **({"arch_weights": weights} if self.space.cell_types else {}),
            "alphas": {t: a.detach() for t, a in m.relax.alphas.items()},
            **m.epoch_record(),
            **monitors.epoch_figures(genotype.cell_ops(), weights),
        }
        every = self.cfg.search.hessian_every
        learned = any(a.requires_grad for a in m.arch)  # (rsws's architecture is drawn: no Hessian to watch)
        batch = self.monitor_batch() if every and (epoch + 1) % every == 0 and m.trains and learned else None
        if batch is not None:
            record["hessian_eigenvalue"] = self.hessian_eigenvalue(batch)
        self.watch(epoch, record, genotype)
        return record

    def monitor_batch(self):
        """The batch the Hessian monitor reads: the first val batch, no augmentation (None: no monitor)."""
        n = self.cfg.search.batch_size
        if hasattr(self, "arch_images"):
            idx = self.val_idx[:n].tolist()
            return next(self.data.eval_batches(self.arch_images, idx, n, self.device), None)
        x, y = self.data.train_x[self.val_idx[:n]], self.data.train_y[self.val_idx[:n]]
        return next(eval_batches(x, y, n, mean=self.data.mean, std=self.data.std, device=self.device))

    def hessian_eigenvalue(self, batch) -> float:
        """The collapse monitor of Zela et al.: the dominant eigenvalue of the val loss's Hessian w.r.t. the
        architecture on ``batch``; the run's RNG and BN statistics stay as they were."""
        m = self.method
        buffers = [b for net in m.modules() for b in net.buffers()]
        saved = [b.clone() for b in buffers]
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            value = monitors.dominant_eigenvalue(lambda: m.loss(batch)[0], m.arch, self.cfg.search.hessian_iters)
        with torch.no_grad():
            for b, v in zip(buffers, saved):
                b.copy_(v)
        return value

    def watch(self, epoch: int, record: dict, genotype: Architecture) -> None:
        """One console line (logger ``diffnas``) when a sign of collapse appears; not repeated while it lasts."""
        if self.history is None:  # a resumed run: the monitors of the epochs before it
            self.history = [{k: r[k] for k in r if _monitor_key(k)} for r in self.run.read_log("metrics.jsonl")]
        self.history.append({"epoch": epoch, **{k: v for k, v in record.items() if _monitor_key(k)}})
        edges = {t: len(ops) for t, ops in genotype.cell_ops().items()}
        signs = monitors.collapse_warnings(self.history, edges)
        if distributed.is_main():
            for figure, line in signs.items():
                if figure not in self.warned:
                    log.warning("diffnas: warning: %s", line)
        self.warned = set(signs)

    def lookup(self, genotype, epoch: int) -> dict:
        """The epoch's architecture in the benchmark table (``lookup_<metric>``); a miss is logged as None with a
        warning, not an error: one architecture the table lacks should not end a long search (the final one does)."""
        if self.table is None:
            return {}
        record = self.table.record(genotype)
        if self.table.get(genotype) is None and distributed.is_main():
            print(f"diffnas: warning: {self.table.path}: epoch {epoch}'s architecture is not in it", file=sys.stderr)
        return record

    def state_dict(self) -> dict:
        return {"method": self.method.state_dict(), "train": self.train.state_dict(), "val": self.val.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """The checkpoint's state, with the learning rates and length of this (resumed) config."""
        with fitting(self.run.file(CHECKPOINT)):
            keep_config(self.method, lambda: self.method.load_state_dict(state["method"]))
            self.train.load_state_dict(state["train"])
            self.val.load_state_dict(state["val"])


def _monitor_key(key: str) -> bool:
    return key == "epoch" or key.startswith(monitors.FIGURES)


def search(cfg: Config, out, resume: bool = False, progress: bool = True, callbacks=None) -> SearchResult:
    """Run (or resume) a search; writes the run directory and returns the final architecture.

    With a benchmark table (``cfg.benchmark.file``, checked before anything is written) every epoch's
    architecture is looked up and logged; the final one goes into the summary, and if the table lacks it the
    search ends with that error after writing everything.
    """
    table = BenchmarkTable.from_config(cfg)

    def finish(job, run, records, seconds, peak) -> SearchResult:
        saved = run.write and run.file("genotype.json").is_file()
        genotype = load_architecture(run.file("genotype.json")) if saved else job.method.genotype()
        last = records[-1] if records else {}
        lookup = table.get(genotype) if table is not None else None
        metric = job.space.task.metric
        val_score = last.get(f"val_{metric}", float("nan"))
        result = SearchResult(
            genotype,
            run.path,
            records,
            last.get("val_acc", float("nan")),
            seconds,
            peak,
            lookup or {},
            metric,
            val_score,
        )
        run.write_json(
            "summary.json",
            {
                "kind": "search",
                "method": cfg.method,
                "space": cfg.space,
                "val_acc": result.val_acc,
                "metric": metric,
                f"val_{metric}": val_score,
                "seconds": result.seconds,
                "peak_memory_mb": result.peak_memory_mb,
                "genotype": genotype.to_dict(),
                **(table.summary(genotype) if table is not None else {}),
            },
        )
        if table is not None:
            table.lookup(genotype)  # the table lacks the found architecture: one line, after the run is saved
        return result

    job_class = SearchJob
    if space_from_config(cfg).task.name == "language-model":
        from .text import TextSearchJob as job_class
    make = lambda run: job_class(cfg, run, progress, table)  # noqa: E731
    result = run_job(make, cfg, out, resume, callbacks, LOGS, finish, "search")
    distributed.barrier()  # every rank sees rank 0's finished run directory before going on
    return result
