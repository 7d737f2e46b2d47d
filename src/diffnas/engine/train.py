"""Retraining an architecture from scratch with its space's protocol, and its report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from ..config import Config
from ..data import Augment, BatchStream, check_batch_size, load_dataset
from ..data.benchmark import BenchmarkTable
from ..runtime import distributed
from ..runtime.rundir import CHECKPOINT, RunDir, seed_everything
from ..spaces import Architecture, get_space_class
from .loop import check_finite, evaluate_split, resolve_device, run_job
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
        data = load_dataset(cfg.dataset, cfg.data_dir, image_size=cfg.image_size, subset=cfg.subset, seed=cfg.seed)
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
        self.space = get_space_class(genotype.space)()
        self.task = self.space.task
        self.net = self.space.build_network(genotype, cfg, data.in_channels, data.num_classes).to(self.device)
        self.opt = torch.optim.SGD(
            self.net.parameters(), t.lr, momentum=t.momentum, weight_decay=t.wd, nesterov=t.get("nesterov", False)
        )
        milestones = t.get("lr_milestones")  # a step schedule (Network Slimming's: 0.1x at these fractions)
        if milestones:
            steps = [round(f * t.epochs) for f in milestones]
            self.lr_schedule = torch.optim.lr_scheduler.MultiStepLR(self.opt, steps, gamma=0.1)
        else:
            self.lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, t.epochs, eta_min=t.lr_min)
        self.epochs = t.epochs

    def run_epoch(self, epoch: int) -> dict:
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
            loss = self.task.loss(logits, y)
            if aux is not None:  # an auxiliary head (DARTS's protocol)
                loss = loss + t.auxiliary * self.task.loss(aux, y)
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
        self.lr_schedule.step()
        losses, correct, seen = distributed.sum_values([losses, correct, seen])
        test = self.test()
        return {
            "train_loss": losses / seen,
            "train_acc": correct / seen,
            **test,
            "lr": lr,
            "drop_path": self.net.drop_prob,
        }

    def test(self) -> dict:
        """Test loss and metric on the whole test set (a multi-process run: each rank a part, counts summed)."""
        distributed.average_buffers(self.net)  # BN running statistics: the same on every rank
        d = self.data
        return evaluate_split(
            lambda batches: self.task.evaluate(self.net, batches),
            d.test_x,
            d.test_y,
            256,
            "test",
            mean=d.mean,
            std=d.std,
            device=self.device,
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

    result = run_job(make_job, cfg, out, resume, callbacks, LOGS, finish)
    distributed.barrier()  # every rank sees rank 0's finished run directory before going on
    return result
