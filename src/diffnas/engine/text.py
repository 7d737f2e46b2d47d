"""Search and retraining on text (the language-model task): streams of windows instead of image batches.

The search is the image search with other data: the train stream of the training text,
the architecture's stream of the validation text (the reference's choice) or of a split
of the training text, both restarting with a zero state every epoch as the reference's
loops do, and the supernet judged by perplexity on the validation text.

The retraining follows the reference's ``train.py``: SGD (its learning rate scaled by
each window's length), then averaged SGD from the epoch the validation loss stops
improving by the non-monotone rule (``asgd_due``), the averaged weights used to
evaluate; the best weights by validation loss are kept and are what the test
perplexity is measured with; a non-finite loss rolls the weights back to them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from tqdm import tqdm

from ..data.text import TextBatch, TextStream, batchify, load_corpus, windows
from ..errors import DataError, TrainingDiverged
from ..methods.base import scaled_lr
from ..runtime import distributed
from ..runtime.rundir import CHECKPOINT, seed_everything
from ..spaces import get_space_class
from .loop import resolve_device
from .resume import fitting, keep_config
from .search import SearchJob


def load_text(cfg):
    """The corpus of ``cfg.dataset``, its training text cut to the first ``cfg.subset`` tokens if set."""
    corpus = load_corpus(cfg.dataset, cfg.data_dir)
    if cfg.subset is not None:
        if cfg.subset > len(corpus.train):
            raise DataError(f"{cfg.dataset}: subset {cfg.subset} is more than the {len(corpus.train)} training tokens")
        corpus.train = corpus.train[: cfg.subset]
    return corpus


def evaluate_text(task, net, data: torch.Tensor, bptt: int, prefix: str) -> dict:
    """``<prefix>_loss`` (per token) and ``<prefix>_ppl`` over a batchified split, the state carried throughout."""
    sums = task.evaluate(net, windows(data, bptt))
    return task.summarize({f"{prefix}_loss": sums["loss"] / max(sums["n"], 1)}, prefix)


class TextSearchJob(SearchJob):
    def load_data(self) -> tuple[int, int]:
        cfg, s = self.cfg, self.cfg.search
        corpus = load_text(cfg)
        train, arch = corpus.train, corpus.valid
        if s.arch_data == "split":
            n = round(len(train) * s.train_portion)
            train, arch = train[:n], train[n:]
        part = (distributed.rank(), distributed.world_size())
        self.train = TextStream(
            batchify(train, s.batch_size, "training text"), s.bptt, regularize=True, device=self.device, part=part
        )
        self.val = TextStream(batchify(arch, s.batch_size, "architecture text"), s.bptt, device=self.device, part=part)
        self.eval_data = batchify(corpus.valid, s.eval_batch_size, "validation text").to(self.device)
        self.vocab = corpus.vocab_size
        return corpus.vocab_size, corpus.vocab_size

    def run_epoch(self, epoch: int, tick=lambda: None) -> dict:
        self.train.reset()
        self.val.reset()
        return super().run_epoch(epoch, tick)

    def size_line(self) -> str:
        params = sum(p.numel() for net in self.method.modules() for p in net.parameters()) / 1e6
        s = self.cfg.search
        return (
            f"search: {self.cfg.method} on {self.cfg.dataset} (vocabulary {self.vocab}), supernet {params:.2f} M "
            f"parameters (hidden {s.channels}, {s.nodes} nodes), {self.steps_per_epoch} steps/epoch x "
            f"{self.epochs} epochs, on {self.device}"
        )

    def epoch_note(self, record: dict) -> str:
        return self._short

    def evaluate_val(self) -> dict:
        return evaluate_text(self.space.task, self.method.net, self.eval_data, self.cfg.search.bptt, "val")

    def monitor_batch(self) -> TextBatch:
        """The Hessian monitor's batch: the validation text's first window, from the zero state."""
        x, y = next(windows(self.eval_data, self.cfg.search.bptt))
        return TextBatch(x, y, None, 1.0)


def asgd_due(val_losses: list[float], nonmono: int) -> bool:
    """The reference's switch to averaged SGD: more than ``nonmono`` evaluations, and the last one worse than the
    best of all but the last ``nonmono``."""
    return len(val_losses) > nonmono and val_losses[-1] > min(val_losses[:-nonmono])


class TextTrainJob:
    """The derived language model retrained by the reference's recipe (see the module docstring)."""

    def __init__(self, cfg, genotype, run, progress: bool = True):
        self.cfg, self.genotype, self.run, self.progress = cfg, genotype, run, progress
        t = cfg.train
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        corpus = load_text(cfg)
        self.vocab = corpus.vocab_size
        part = (distributed.rank(), distributed.world_size())
        data = batchify(corpus.train, t.batch_size, "training text")
        self.train = TextStream(
            data, t.bptt, jitter=True, max_extra=t.max_extra, regularize=True, device=self.device, part=part
        )
        self.valid = batchify(corpus.valid, t.eval_batch_size, "validation text").to(self.device)
        self.test_data = batchify(corpus.test, t.test_batch_size, "test text").to(self.device)
        self.space = get_space_class(genotype.space)()
        self.task = self.space.task
        self.net = self.space.build_network(genotype, cfg, self.vocab, self.vocab).to(self.device)
        self.opt = self.sgd()
        self.averaging = False
        self.val_losses: list[float] = []
        self.best: dict | None = None  # the weights of the best validation loss (averaged ones under ASGD)
        self.best_loss = math.inf
        self.epochs = t.epochs
        self.steps_per_epoch = self.train.steps_per_epoch

    def size_line(self) -> str:
        t = self.cfg.train
        params = sum(p.numel() for p in self.net.parameters()) / 1e6
        return (
            f"retrain: {self.cfg.dataset} (vocabulary {self.vocab}), language model {params:.2f} M parameters "
            f"(hidden {t.channels}), {self.steps_per_epoch} steps/epoch x {self.epochs} epochs, on {self.device}"
        )

    def epoch_note(self, record: dict) -> str:
        return "averaged SGD" if record.get("asgd") else ""

    def sgd(self):
        t = self.cfg.train
        return torch.optim.SGD(self.net.parameters(), t.lr, weight_decay=t.wd)

    def asgd(self):
        t = self.cfg.train
        return torch.optim.ASGD(self.net.parameters(), t.lr, t0=0, lambd=0.0, weight_decay=t.wd)

    def averaged(self):
        """The averaged weights of ASGD in place of the current ones, for evaluation; a context."""
        job = self

        class Swap:
            def __enter__(self):
                self.saved = [p.detach().clone() for p in job.net.parameters()]
                if job.averaging:
                    with torch.no_grad():
                        for p in job.net.parameters():
                            ax = job.opt.state.get(p, {}).get("ax")
                            if ax is not None:
                                p.copy_(ax)

            def __exit__(self, *exc):
                with torch.no_grad():
                    for p, w in zip(job.net.parameters(), self.saved):
                        p.copy_(w)

        return Swap()

    def run_epoch(self, epoch: int, tick=lambda: None) -> dict:
        t = self.cfg.train
        self.net.train()
        self.train.reset()
        steps = self.train.steps_per_epoch
        show = self.progress and distributed.is_main()
        bar = tqdm(range(steps), desc=f"train {epoch + 1}/{self.epochs}", leave=False, disable=not show)
        params = list(self.net.parameters())
        loss_sum, tokens, diverged = 0.0, 0, False
        for _ in bar:
            batch = self.train.next()
            loss, _ = self.task.batch_loss(self.net, batch)
            value = distributed.mean_values({"loss": loss.item()}, ("loss",))["loss"]
            if not math.isfinite(value):
                diverged = True
                break
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if distributed.world_size() > 1:
                for p, g in zip(params, distributed.average_gradients(params, [p.grad for p in params])):
                    p.grad = g
            if t.grad_clip:
                nn.utils.clip_grad_norm_(params, t.grad_clip)
            with scaled_lr(self.opt, batch.lr_scale):
                self.opt.step()
            loss_sum += value * batch.y.numel()
            tokens += batch.y.numel()
            bar.set_postfix(loss=f"{value:.3f}")
            tick()
        if diverged:
            return self.roll_back(epoch)
        with self.averaged():
            val = evaluate_text(self.task, self.net, self.valid, t.bptt, "val")
            if val["val_loss"] < self.best_loss:
                self.best_loss = val["val_loss"]
                self.best = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.val_losses.append(val["val_loss"])
        if not self.averaging and asgd_due(self.val_losses, t.nonmono):
            self.averaging, self.opt = True, self.asgd()
        train_loss = loss_sum / max(tokens, 1)
        return {
            "train_loss": train_loss,
            "train_ppl": math.exp(min(train_loss, 700.0)),
            **val,
            "best_val_ppl": math.exp(min(self.best_loss, 700.0)),
            "asgd": self.averaging,
            "lr": t.lr,
        }

    def roll_back(self, epoch: int) -> dict:
        """A non-finite loss: back to the best weights (the reference reloads its last checkpoint)."""
        if self.best is None:
            raise TrainingDiverged(
                f"the training loss became non-finite in epoch {epoch} before any weights were kept (lower train.lr)"
            )
        self.net.load_state_dict(self.best)
        self.opt = self.asgd() if self.averaging else self.sgd()
        return {"rolled_back": True, "best_val_ppl": math.exp(min(self.best_loss, 700.0)), "asgd": self.averaging}

    def final_scores(self) -> dict:
        """Validation and test perplexity of the best weights (the last ones if no epoch ran)."""
        t = self.cfg.train
        with self.averaged():
            if self.best is not None:
                self.net.load_state_dict(self.best)
            val = evaluate_text(self.task, self.net, self.valid, t.bptt, "val")
            test = evaluate_text(self.task, self.net, self.test_data, t.bptt, "test")
        return {**val, **test}

    def state_dict(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "averaging": self.averaging,
            "val_losses": list(self.val_losses),
            "best": self.best,
            "best_loss": self.best_loss,
            "train": self.train.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        def load():
            self.net.load_state_dict(state["net"])
            self.averaging = bool(state["averaging"])
            self.opt = self.asgd() if self.averaging else self.sgd()
            self.opt.load_state_dict(state["opt"])

        with fitting(self.run.file(CHECKPOINT)):
            keep_config(self, load)
            self.val_losses = [float(v) for v in state["val_losses"]]
            self.best, self.best_loss = state["best"], float(state["best_loss"])
            self.train.load_state_dict(state["train"])
