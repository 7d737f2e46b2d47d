"""Retraining an architecture from scratch with its space's protocol, and its report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from ..config import Config
from ..data import Augment, BatchStream, check_batch_size, eval_batches
from ..data.benchmark import BenchmarkTable
from ..data.stream import ImageStream, load_streamed
from ..errors import ConfigError
from ..runtime import distributed
from ..runtime.rundir import CHECKPOINT, RunDir, seed_everything
from ..schedules.lr import lr_scheduler
from ..spaces import Architecture, get_space_class
from .loop import (
    below_chance_note,
    check_finite,
    evaluate_batches,
    load_data,
    reestimate_bn,
    resolve_device,
    run_job,
    scale_words,
)
from .resume import fitting, keep_config

LOGS = ("metrics.jsonl",)


@dataclass
class TrainResult:
    genotype: Architecture
    run_dir: Path
    test_acc: float
    params_m: float
    flops_m: float
    seconds: float
    peak_memory_mb: float
    lookup: dict = field(default_factory=dict)  # the architecture's metrics in the benchmark table, if one was given
    metric: str = "acc"  # the space's task's metric; its final values under ``scores`` (test_<metric>, ...)
    scores: dict | None = None


def _count(data, split: str) -> int:
    """Images in a split of a data set held in memory (``train_y``) or streamed (``train``)."""
    return len(getattr(data, f"{split}_y", None) if hasattr(data, f"{split}_y") else getattr(data, split))


def count_params_m(net: nn.Module) -> float:
    """Parameters in millions, without the auxiliary head (as papers report them)."""
    return sum(p.numel() for n, p in net.named_parameters() if not n.startswith("aux_head")) / 1e6


def count_flops_m(net: nn.Module, in_channels: int, size: int) -> float:
    """Multiply-adds of one inference on one image, in millions (FLOPs as NAS papers count them)."""
    was_training = net.training
    net.eval()
    x = torch.zeros(1, in_channels, size, size, device=next(net.parameters()).device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    net.train(was_training)
    return counter.get_total_flops() / 2 / 1e6


class TrainJob:
    def __init__(self, cfg: Config, genotype: Architecture, run: RunDir, progress: bool = True):
        self.cfg, self.genotype, self.run, self.progress = cfg, genotype, run, progress
        t = cfg.train
        self.device = resolve_device(cfg.device)
        distributed.check_batch_size(t.batch_size, "train.batch_size")
        seed_everything(cfg.seed)
        if t.get("pipeline", "memory") == "stream":
            self.load_stream()
        else:
            self.load_memory()
        data = self.data
        self.space = get_space_class(genotype.space)()
        self.task = self.space.task
        self.net = self.space.build_network(genotype, cfg, data.in_channels, data.num_classes).to(self.device)
        self.opt = torch.optim.SGD(
            self.net.parameters(), t.lr, momentum=t.momentum, weight_decay=t.wd, nesterov=t.get("nesterov", False)
        )
        self.lr_schedule = lr_scheduler(
            self.opt,
            t.get("lr_schedule", "cosine"),
            t.epochs,
            t.lr_min,
            t.get("warmup_epochs", 0),
            t.get("lr_gamma", 0.97),
            t.get("lr_milestones") or (),
        )
        self.epochs = t.epochs
        self.steps_per_epoch = self.train.steps_per_epoch
        self.bn_batches = t.get("bn_batches", 0)  # absent in runs of earlier versions

    def load_memory(self) -> None:
        """The data set decoded once into memory; ``test_batches`` this rank's part of the test set."""
        cfg, t = self.cfg, self.cfg.train
        data = load_data(cfg)
        self.data = data
        check_batch_size(t.batch_size, "train.batch_size", training_set=len(data.train_y))
        pad = t.crop_padding if t.crop_padding is not None else data.image_size // 8
        augment = Augment(crop_padding=pad, flip=data.flip, cutout=t.cutout)
        self.train = BatchStream(
            data.train_x,
            data.train_y,
            torch.arange(len(data.train_y)),
            t.batch_size,
            mean=data.mean,
            std=data.std,
            seed=cfg.seed,
            augment=augment,
            device=self.device,
            part=(distributed.rank(), distributed.world_size()),
        )
        part = distributed.shard_range(len(data.test_y))
        x, y = data.test_x[part], data.test_y[part]
        self.test_batches = lambda: eval_batches(x, y, 256, mean=data.mean, std=data.std, device=self.device)
        self.test_steps = math.ceil(len(y) / 256)

    def load_stream(self) -> None:
        """An image folder decoded per batch in worker processes (``data/stream.py``)."""
        cfg, t = self.cfg, self.cfg.train
        if cfg.dataset != "imagefolder":
            raise ConfigError(
                f"train.pipeline = stream reads an image folder (--dataset imagefolder), not {cfg.dataset}"
            )
        data = load_streamed(cfg.data_dir, t.crop_size, t.workers, cfg.seed)
        self.data = data
        check_batch_size(t.batch_size, "train.batch_size", training_set=len(data.train))
        self.train = ImageStream(
            data.train,
            range(len(data.train)),
            t.batch_size,
            mean=data.mean,
            std=data.std,
            seed=cfg.seed,
            workers=t.workers,
            device=self.device,
            part=(distributed.rank(), distributed.world_size()),
        )
        part = range(len(data.test))[distributed.shard_range(len(data.test))]
        self.test_batches = lambda: data.eval_batches(data.test, part, 256, self.device)
        self.test_steps = math.ceil(len(part) / 256)

    def size_line(self) -> str:
        t, d = self.cfg.train, self.data
        return (
            f"retrain: {d.name} ({_count(d, 'train')} train, {_count(d, 'test')} test images, "
            f"{d.image_size}x{d.image_size}), "
            f"network {count_params_m(self.net):.2f} M parameters{scale_words(t)}, "
            f"{self.steps_per_epoch} steps/epoch x {self.epochs} epochs, on {self.device}"
        )

    def epoch_note(self, record: dict) -> str:
        return below_chance_note(record.get("test_acc"), self.data.num_classes, "train", self.bn_batches)

    def run_epoch(self, epoch: int, tick=lambda: None) -> dict:
        t = self.cfg.train
        self.net.train()
        self.net.drop_prob = t.drop_path * epoch / self.epochs
        lr = self.opt.param_groups[0]["lr"]
        losses, correct, seen = 0.0, 0, 0
        steps = self.train.steps_per_epoch
        show = self.progress and distributed.is_main()
        bar = tqdm(range(steps), desc=f"train {epoch + 1}/{self.epochs}", leave=False, disable=not show)
        params = list(self.net.parameters())
        for i in bar:
            x, y = self.train.next()
            out = self.net(x)
            logits, aux = out if isinstance(out, tuple) else (out, None)
            smoothing = t.get("label_smoothing", 0.0)
            loss = self.task.loss(logits, y, smoothing)
            if aux is not None:  # an auxiliary head (DARTS's protocol)
                loss = loss + t.auxiliary * self.task.loss(aux, y, smoothing)
            value = distributed.mean_values({"loss": loss.item()}, ("loss",))["loss"]  # the global batch's
            check_finite(value, f"training loss at epoch {epoch} step {i}", self.run)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if distributed.world_size() > 1:  # the same all-reduce of the gradients as a search's set_grads
                for p, g in zip(params, distributed.average_gradients(params, [p.grad for p in params])):
                    p.grad = g
            if t.grad_clip:
                nn.utils.clip_grad_norm_(self.net.parameters(), t.grad_clip)
            self.opt.step()
            losses += loss.item() * y.numel()
            correct += (logits.argmax(1) == y).sum().item()
            seen += y.numel()
            bar.set_postfix(loss=f"{value:.3f}")
            tick()
        self.lr_schedule.step()
        losses, correct, seen = distributed.sum_values([losses, correct, seen])
        test = self.test()
        skipped = {"skipped_images": self.train.skipped} if hasattr(self.train, "skipped") else {}
        return {
            **skipped,
            "train_loss": losses / seen,
            "train_acc": correct / seen,
            **test,
            "lr": lr,
            "drop_path": self.net.drop_prob,
        }

    def test(self) -> dict:
        """Test loss and metric on the whole test set (a multi-process run: each rank a part, counts summed)."""
        d = self.data
        if self.bn_batches and hasattr(d, "train_x"):  # (in memory: a streamed set re-reads nothing here)
            b = self.cfg.train.batch_size
            n = self.bn_batches * b  # the first training images, unaugmented (the stream stays untouched)
            batches = eval_batches(d.train_x[:n], d.train_y[:n], b, mean=d.mean, std=d.std, device=self.device)
            reestimate_bn([self.net], list(batches))
        distributed.average_buffers(self.net)  # BN running statistics: the same on every rank
        return evaluate_batches(
            lambda b: self.task.evaluate(self.net, b, top5=True),
            self.test_batches(),
            "test",
            self.progress,
            self.test_steps,
        )

    def state_dict(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "train": self.train.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """The checkpoint's state, with the learning rates and length of this (resumed) config."""

        def load():
            self.net.load_state_dict(state["net"])
            self.opt.load_state_dict(state["opt"])
            self.lr_schedule.load_state_dict(state["lr_schedule"])

        with fitting(self.run.file(CHECKPOINT)):
            keep_config(self, load)
            self.train.load_state_dict(state["train"])


def train(
    cfg: Config, genotype: Architecture, out, resume: bool = False, progress: bool = True, callbacks=None
) -> TrainResult:
    """Retrain ``genotype`` from scratch (or resume); writes the run directory and returns test accuracy.

    With a benchmark table (``cfg.benchmark.file``) the architecture's metrics in it go into result.json
    beside the measured ones; a table that lacks it is an error before anything runs."""
    table = BenchmarkTable.from_config(cfg)
    lookup = table.lookup(genotype) if table is not None else {}

    text = get_space_class(genotype.space).task.name == "language-model"

    def make_job(run: RunDir):
        if run.write:
            genotype.save(run.file("genotype.json"))
        if text:
            from .text import TextTrainJob

            return TextTrainJob(cfg, genotype, run, progress)
        return TrainJob(cfg, genotype, run, progress)

    def finish(job, run, records, seconds, peak) -> TrainResult:
        if text:  # the best weights' validation and test perplexity; no image, no FLOPs per image
            scores, flops = job.final_scores(), float("nan")
        else:
            scores = {"test_acc": records[-1]["test_acc"] if records else job.test()["test_acc"]}
            flops = count_flops_m(job.net, job.data.in_channels, job.data.image_size)
        metric = job.task.metric
        result = TrainResult(
            genotype,
            run.path,
            scores.get("test_acc", float("nan")),
            count_params_m(job.net),
            flops,
            seconds,
            peak,
            lookup,
            metric,
            scores,
        )
        run.write_json(
            "result.json",
            {
                "kind": "train",
                "space": genotype.space,
                "test_acc": result.test_acc,
                "metric": metric,
                **scores,
                "params_m": result.params_m,
                "flops_m": result.flops_m,
                "seconds": result.seconds,
                "peak_memory_mb": result.peak_memory_mb,
                "genotype": genotype.to_dict(),
                **genotype.facts(),
                **(table.summary(genotype) if table is not None else {}),
            },
        )
        return result

    result = run_job(make_job, cfg, out, resume, callbacks, LOGS, finish, "retrain")
    distributed.barrier()  # every rank sees rank 0's finished run directory before going on
    return result
