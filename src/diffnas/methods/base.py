"""The search-method interface and the parts every method shares.

A method owns the supernet, the two optimizers, the schedule and the
regularizers, and says in ``step`` how weights and architecture move for one
training batch. The engine knows nothing else about it: it calls ``epoch_start``,
``step`` per batch, ``evaluate``, ``genotype`` and the state-dict pair.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..runtime.distributed import average_gradients
from ..regularizers import build_regularizers
from ..relax import build_relaxation
from ..schedules import build_schedule
from ..spaces.genotype import Genotype
from ..supernet import Supernet


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y).float().mean().item()


def set_grads(params, grads) -> None:
    """Install ``autograd.grad`` results; params without a gradient get ``None`` and are skipped by the optimizer.

    Every optimizer step of every method takes its gradients from here, so this is where a
    multi-process run (torchrun) averages them over the ranks (``engine/distributed.py``);
    in a single process the gradients are installed as they are.
    """
    for p, g in zip(params, average_gradients(params, grads)):
        p.grad = g


class SearchMethod:
    name = ""
    help = ""
    defaults: dict = {}  # config overrides from the method's paper, merged over DARTS's
    relaxation = "softmax"

    def __init__(self, cfg, space, in_channels: int, num_classes: int, device):
        s = cfg.search
        self.cfg, self.space, self.device = cfg, space, device
        self.in_channels, self.num_classes = in_channels, num_classes
        self.relax = build_relaxation(s.relaxation or self.relaxation, space, cfg)
        self.net = self.make_supernet().to(device)
        self.weights = self.net.weight_parameters()
        self.arch = self.net.arch_parameters()
        self.schedule = build_schedule(s.schedule, s.arch_start_epoch)
        self.regularizers = build_regularizers(cfg.reg, space)
        self.w_opt = torch.optim.SGD(self.weights, s.w_lr, momentum=s.w_momentum, weight_decay=s.w_wd)
        a_wd = s.a_wd if self.relax.arch_weight_decay is None else self.relax.arch_weight_decay
        self.a_opt = torch.optim.Adam(self.arch, s.a_lr, betas=tuple(s.a_betas), weight_decay=a_wd)
        self.w_lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, s.epochs, eta_min=s.w_lr_min)
        self.epoch, self.epochs = 0, s.epochs
        self.step_in_epoch, self.steps_per_epoch = 0, 1
        self.arch_steps = 0
        self.last_grad_norm = None  # pre-clip norm of the last weight gradient (read by the FIMT schedule)

    def make_supernet(self) -> nn.Module:
        s = self.cfg.search
        return Supernet(self.relax, s.channels, s.layers, self.num_classes, self.in_channels)

    # -- what the engine calls -------------------------------------------------------------
    def epoch_start(self, epoch: int, steps_per_epoch: int) -> None:
        self.epoch, self.steps_per_epoch, self.step_in_epoch = epoch, steps_per_epoch, 0
        self.relax.epoch_start(epoch)

    def epoch_end(self) -> None:
        self.w_lr_schedule.step()

    def epoch_record(self) -> dict:
        """Per-epoch facts the engine adds to metrics.jsonl (e.g. IDARTS's backtracked edges)."""
        return {}

    def step(self, batch, val_batches) -> dict:
        """One training step; ``val_batches.next()`` gives a val batch when an architecture step needs one."""
        raise NotImplementedError

    def genotype(self) -> Genotype:
        return self.relax.genotype()

    @torch.no_grad()
    def evaluate(self, batches) -> dict:
        self.net.eval()
        total, correct, loss = 0, 0, 0.0
        for x, y in batches:
            logits = self.net(x)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            total += y.numel()
        self.net.train()
        return {"val_loss": loss / max(total, 1), "val_acc": correct / max(total, 1)}

    @property
    def progress(self) -> float:
        """Fraction of the search done, in [0, 1]."""
        return min(1.0, (self.epoch + self.step_in_epoch / max(self.steps_per_epoch, 1)) / self.epochs)

    @property
    def w_lr(self) -> float:
        return self.w_opt.param_groups[0]["lr"]

    # -- parts methods combine -------------------------------------------------------------
    def loss(self, batch, net=None) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = (net or self.net)(x)
        return F.cross_entropy(logits, y), logits

    def regularization(self) -> torch.Tensor | float:
        return sum((r.penalty(self) for r in self.regularizers), 0.0)

    def arch_step_with(self, grads) -> None:
        """Apply architecture gradients, then let regularizers update their state."""
        set_grads(self.arch, grads)
        self.a_opt.step()
        self.arch_steps += 1
        for r in self.regularizers:
            r.after_arch_step(self)

    def apply_weight_grads(self, params, grads, opt=None, record_norm: bool = True) -> None:
        """Install weight gradients, clip them and step ``opt`` (default the weight optimizer).

        Every method's weight update goes through here, so the pre-clip gradient norm that
        DARTS-PRIME's FIMT schedule reads (``last_grad_norm``) exists under any method.
        """
        set_grads(params, grads)
        norm = None
        if self.cfg.search.grad_clip:
            norm = nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], self.cfg.search.grad_clip)
        if record_norm:
            self.last_grad_norm = norm
        (opt or self.w_opt).step()

    def first_order_arch_step(self, val_batch) -> dict:
        loss, logits = self.loss(val_batch)
        total = loss + self.regularization()
        grads = torch.autograd.grad(total, self.arch, allow_unused=True)
        self.arch_step_with(grads)
        return {"arch_loss": loss.item(), "arch_acc": accuracy(logits, val_batch[1])}

    def weight_step(self, batch) -> dict:
        loss, logits = self.loss(batch)
        self.apply_weight_grads(self.weights, torch.autograd.grad(loss, self.weights, allow_unused=True))
        self.step_in_epoch += 1
        return {"loss": loss.item(), "acc": accuracy(logits, batch[1])}

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "w_opt": self.w_opt.state_dict(),
            "a_opt": self.a_opt.state_dict(),
            "w_lr_schedule": self.w_lr_schedule.state_dict(),
            "schedule": self.schedule.state_dict(),
            "regularizers": [r.state_dict() for r in self.regularizers],
            "arch_steps": self.arch_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.w_lr_schedule.load_state_dict(state["w_lr_schedule"])
        self.schedule.load_state_dict(state["schedule"])
        for r, s in zip(self.regularizers, state["regularizers"]):
            r.load_state_dict(s)
        self.arch_steps = state["arch_steps"]
