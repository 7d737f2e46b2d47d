"""The search-method interface and the parts every method shares.

A method owns the supernet, the two optimizers, the schedule and the regularizers,
and says how weights and architecture move. The step frame (``step``: relaxation hook,
schedule check, architecture update, weight update, counters, records) is written once
here; a method overrides ``arch_step`` and ``weight_step`` (or, for another order of
updates such as RARTS's Gauss-Seidel sweep, ``updates``). The engine knows nothing else
about it: it calls ``epoch_start``, ``step`` per batch, ``epoch_end``, ``evaluate``,
``genotype``, ``modules``, ``data_keys`` and the state-dict pair.

Declared, not guessed: ``requires`` names the relaxation capabilities a method needs
(checked before anything runs, ``diffnas.catalog``), ``options`` its own config keys
(``cfg[<method name>]``), ``defaults`` the paper's values of shared keys; both dicts
inherit along the class hierarchy.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from ..config import inherited
from ..regularizers import build_regularizers
from ..relax import build_relaxation
from ..runtime.distributed import average_gradients
from ..schedules import build_schedule
from ..schedules.lr import lr_scheduler
from ..spaces import Architecture


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


@contextlib.contextmanager
def only_requiring_grad(wanted, among):
    """Within: of the tensors ``among``, only those in ``wanted`` require grad (restored after).

    Autograd then pays only for what a step updates: an op none of whose inputs requires
    grad is not recorded (a frozen stem and every cell before the first updated part run as
    under ``no_grad``), and ops whose weights are not wanted save nothing for their weight
    gradients. The gradients of ``wanted`` are the same, bit for bit.
    """
    keep = {id(p) for p in wanted}
    changed = [p for p in among if p.requires_grad and id(p) not in keep]
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)


@contextlib.contextmanager
def scaled_lr(opt, scale: float):
    """Within: ``opt``'s learning rates times ``scale`` (a text window's length / bptt, as the reference
    scales a step); the schedule's values afterwards."""
    if scale == 1.0:
        yield
        return
    base = [g["lr"] for g in opt.param_groups]
    for g, lr in zip(opt.param_groups, base):
        g["lr"] = lr * scale
    try:
        yield
    finally:
        for g, lr in zip(opt.param_groups, base):
            g["lr"] = lr


class SearchMethod:
    name = ""
    help = ""
    defaults: dict = {}  # the paper's values of shared config keys (search.*, reg, space), over DARTS's
    options: dict = {}  # the method's own config keys, under cfg[<method name>]
    relaxation = "softmax"  # the relaxation it uses unless told otherwise
    requires: frozenset = frozenset()  # relaxation capabilities it needs (see Relaxation.provides)
    data_keys = ("loss", "acc", "arch_loss", "arch_acc")  # per-step numbers measured on data (averaged over ranks)
    trains = True  # False: the engine runs no steps (a method whose architecture is fixed when built: random)

    def __init__(self, cfg, space, in_channels: int, num_classes: int, device):
        s = cfg.search
        self.cfg, self.space, self.device = cfg, space, device
        self.opts = cfg.get(self.name) or {}
        self.in_channels, self.num_classes = in_channels, num_classes
        self.input_shape: tuple | None = None  # (C, H, W) of the data, from the first batch
        self.probe = None  # a benchmark's phase timer (``phase``); None in a run
        self.relax = build_relaxation(s.relaxation or self.relaxation, space, cfg)
        self.net = self.make_supernet().to(device)
        self.weights = self.net.weight_parameters()
        self.arch = self.net.arch_parameters()
        self.schedule = build_schedule(s.schedule, s.arch_start_epoch)
        self.regularizers = build_regularizers(cfg.reg, space)
        self.w_opt = torch.optim.SGD(
            self.weights, s.w_lr, momentum=s.w_momentum, weight_decay=s.w_wd, nesterov=s.get("w_nesterov", False)
        )
        a_wd = s.a_wd if self.relax.arch_weight_decay is None else self.relax.arch_weight_decay
        self.a_opt = torch.optim.Adam(self.arch, s.a_lr, betas=tuple(s.a_betas), weight_decay=a_wd)
        self.w_lr_schedule = lr_scheduler(
            self.w_opt, s.get("w_lr_schedule", "cosine"), s.epochs, s.w_lr_min, s.get("w_lr_warmup", 0)
        )
        self.epoch, self.epochs = 0, s.epochs
        self.step_in_epoch, self.steps_per_epoch = 0, 1
        self.arch_steps = 0
        self.last_grad_norm = None  # pre-clip norm of the last weight gradient (read by the FIMT schedule)

    @classmethod
    def paper_defaults(cls) -> dict:
        return inherited(cls, "defaults")

    @classmethod
    def option_defaults(cls) -> dict:
        return inherited(cls, "options")

    def make_supernet(self) -> nn.Module:
        return self.space.build_supernet(self.relax, self.cfg, self.in_channels, self.num_classes)

    # -- what the engine calls -------------------------------------------------------------
    def modules(self) -> list[nn.Module]:
        """The networks the method trains (BatchNorm statistics are averaged over ranks)."""
        return [self.net]

    def steady_state_epoch(self) -> int:
        """The first epoch whose steps are the method's steady state (no frozen architecture, no warm-up)."""
        return self.cfg.search.arch_start_epoch
    def epoch_start(self, epoch: int, steps_per_epoch: int) -> None:
        self.epoch, self.steps_per_epoch, self.step_in_epoch = epoch, steps_per_epoch, 0
        self.relax.epoch_start(epoch)

    def epoch_end(self) -> None:
        self.w_lr_schedule.step()

    def epoch_record(self) -> dict:
        """Per-epoch facts the engine adds to metrics.jsonl (e.g. IDARTS's backtracked edges)."""
        return {}

    def step(self, batch, val_batches) -> dict:
        """One training step: the frame every method shares; ``val_batches.next()`` gives a val batch."""
        if self.input_shape is None:
            self.input_shape = tuple(batch[0].shape[1:])
        self.relax.step_start()
        with self.scaled_lr(getattr(batch, "lr_scale", 1.0)):
            record = self.updates(batch, val_batches, self.schedule.arch_step_due(self))
        self.step_in_epoch += 1
        self.schedule.after_weight_step(self)
        record.update(self.relax.record(), **self.schedule.record())
        return record

    def scaled_lr(self, scale: float):
        return scaled_lr(self.w_opt, scale)

    def updates(self, batch, val_batches, arch_due: bool) -> dict:
        """DARTS's order: the architecture on a val batch (when due), then the weights on the train batch."""
        record = {}
        if arch_due:
            val_batch = val_batches.next()
            with self.phase("arch"):
                record.update(self.arch_step(val_batch, batch))
        with self.phase("weight"):
            record.update(self.weight_step(batch))
        return record

    def arch_step(self, val_batch, train_batch) -> dict:
        """The architecture update (first order by default)."""
        return self.first_order_arch_step(val_batch)

    def phase(self, name: str):
        """A context around one phase of a step ("arch", "weight"); a benchmark's probe times it."""
        return self.probe.phase(name) if self.probe is not None else contextlib.nullcontext()

    def genotype(self) -> Architecture:
        return self.relax.genotype()

    def evaluate(self, batches) -> dict:
        """The supernet judged by the space's task over ``batches`` (sums; the engine makes means)."""
        return self.space.task.evaluate(self.net, batches)

    @property
    def progress(self) -> float:
        """Fraction of the search done, in [0, 1]."""
        return min(1.0, (self.epoch + self.step_in_epoch / max(self.steps_per_epoch, 1)) / self.epochs)

    @property
    def w_lr(self) -> float:
        return self.w_opt.param_groups[0]["lr"]

    # -- parts methods combine -------------------------------------------------------------
    def loss(self, batch, net=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, output) of ``batch``: the space's task says how a batch meets the network."""
        return self.space.task.batch_loss(net or self.net, batch)

    def regularization(self) -> torch.Tensor | float:
        return sum((r.penalty(self) for r in self.regularizers), 0.0)

    def arch_step_with(self, grads) -> None:
        """Apply architecture gradients, then let regularizers update their state.

        Rows that ``frozen_arch_rows`` names keep their values and Adam moments (a lazy,
        row-sparse Adam): DARTS-CD moves only the relaxed edges' alphas.
        """
        set_grads(self.arch, grads)
        kept = []
        for a, frozen in self.frozen_arch_rows().items():
            frozen = frozen.to(a.device)
            st = self.a_opt.state.get(a, {})
            moments = {k: st[k][frozen].clone() for k in ("exp_avg", "exp_avg_sq") if k in st}
            kept.append((a, frozen, a.detach()[frozen].clone(), moments))
        self.a_opt.step()
        with torch.no_grad():
            for a, frozen, values, moments in kept:
                a[frozen] = values
                st = self.a_opt.state.get(a)
                if not st:  # no gradient (e.g. no edge of this cell type relaxed): no step, maybe no state yet
                    continue
                for k in ("exp_avg", "exp_avg_sq"):
                    st[k][frozen] = moments[k] if k in moments else 0.0
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

    def frozen_arch_rows(self) -> dict:
        """{architecture parameter: [rows] bool}: rows this architecture step must leave as they are."""
        return {}

    def first_order_arch_step(self, val_batch) -> dict:
        loss, logits = self.loss(val_batch)
        total = loss + self.regularization()
        if total.requires_grad:
            grads = torch.autograd.grad(total, self.arch, allow_unused=True)
        else:  # no alpha reaches the loss (DARTS-CD: `none` max-alpha ops cut off every relaxed edge): no step
            grads = [None] * len(self.arch)
        self.arch_step_with(grads)
        return {"arch_loss": loss.item(), "arch_acc": accuracy(logits, val_batch[1])}

    def weight_step(self, batch) -> dict:
        loss, logits = self.loss(batch)
        self.apply_weight_grads(self.weights, torch.autograd.grad(loss, self.weights, allow_unused=True))
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
