"""DARTS-CD (Ahn, Hong, Kim, IEEE Access 2021): coordinate descent over edges; max-alpha; warm-up.

``darts-cd``: per step the ``coordinate`` relaxation samples the relaxed edge(s) of
each cell, or of the whole network (``relax.sample``; equation 2, Algorithm 1); the
architecture step (first order, as in the paper) and the weight step both see that
sample. Only the relaxed edges' op parameters get a weight update (every other edge's
max-alpha op is left exactly as it is, momentum and weight decay included), plus the
parts that belong to no edge (stem, cell preprocessing, classifier): every step, or only
with the relaxed edges they feed (``darts-cd.train_shared``). After the warm-up, only the
relaxed edges' alphas move: the Adam step is restricted to their rows (the other rows'
values and Adam moments are kept, as a lazy/sparse Adam does).

Both methods pay only for what a phase updates (``lean``): within a phase only the
updated tensors require grad, so autograd records nothing before the first of them
and keeps nothing for weight gradients nobody asks for (``only_requiring_grad``).
With ``darts-cd.recompute`` the cells and single-path edges after the relaxed one, which
are recorded only to pass gradients back to it, keep their inputs instead of their
activations and run again in backward (``Supernet.recomputing_frozen_cells``; max-alpha
has no such part: every edge's weight carries a gradient).

``max-alpha``: every edge runs its max-alpha op; weights and alphas (through the
straight-through one-hot) all learn each step.

Warm-up (both): for the first ``warmup_epochs`` epochs (an option of each method) the
sign of every alpha is inverted after each epoch (at the start of epochs 1..W), so those
epochs alternate between softmax(alpha) and softmax(-alpha) (equation 3); Adam's first
moment is inverted with it. The alpha weight decay is ``warmup_a_wd`` (1e-3) during the
warm-up (epochs 0..W-1), when every alpha decays, and ``search.a_wd`` (0) after. The
edge sampling's options (``relax.edges``, ``relax.sample``, ``relax.argmax_none``) are
the coordinate relaxation's own.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from ..errors import ConfigError
from .base import accuracy, only_requiring_grad
from .darts import DARTS

# the paper's values of the shared keys
PAPER = {
    "search": {
        "epochs": 25,
        "batch_size": 64,
        "layers": 20,  # 6 normal cells per stage, 2 reductions
        "w_lr": 0.025,
        "w_lr_min": 0.001,
        "w_momentum": 0.9,
        "w_wd": 3e-4,
        "a_lr": 0.025,
        "a_betas": [0.5, 0.999],
        "a_wd": 0.0,  # after the warm-up: unselected edges must not drift
    }
}


class _SignWarmup(DARTS):
    """DARTS first order plus the warm-up: sign inversions and the alpha weight decay switch."""

    requires = frozenset({"sign-flip"})
    defaults = PAPER
    options = {
        "warmup_epochs": 10,  # sign inversion after each of the first W epochs
        "warmup_a_wd": 1e-3,  # alpha weight decay during the warm-up
    }

    lean = True  # each phase records autograd only for what it updates (False: everything requires grad, as before)
    recompute = False  # lean phases: frozen cells and edges keep only their inputs and run again in backward
    recompute_share = 1.0  # ... in the first cells that hold this share of all cells' activations

    @contextlib.contextmanager
    def recording(self, params):
        """The context of a phase that updates ``params``: nothing else of the weights and alphas requires grad,
        and a cell that only passes gradients on is recomputed in backward rather than kept."""
        if not self.lean:
            yield
            return
        with only_requiring_grad(params, [*self.weights, *self.arch]):
            recomputing = getattr(self.net, "recomputing_frozen_cells", None)  # (a supernet of cells that has it)
            with recomputing(self.recompute_share) if self.recompute and recomputing else contextlib.nullcontext():
                yield

    def arch_step(self, val_batch, train_batch) -> dict:
        with self.recording(self.arch):
            return super().arch_step(val_batch, train_batch)

    def weight_step(self, batch) -> dict:
        with self.recording(self.weights):
            return super().weight_step(batch)

    @property
    def in_warmup(self) -> bool:
        return self.epoch < self.opts.warmup_epochs

    def steady_state_epoch(self) -> int:
        return max(super().steady_state_epoch(), self.opts.warmup_epochs)

    def epoch_start(self, epoch: int, steps_per_epoch: int) -> None:
        if 1 <= epoch <= self.opts.warmup_epochs:
            self.flip_sign()
        super().epoch_start(epoch, steps_per_epoch)
        wd = self.opts.warmup_a_wd if self.in_warmup else self.cfg.search.a_wd
        for group in self.a_opt.param_groups:
            group["weight_decay"] = wd

    def epoch_record(self) -> dict:
        """Per epoch in metrics.jsonl: the max-alpha op of every edge at the epoch's end, and the alphas' sign."""
        return {
            "max_alpha": {t: self.relax.max_alpha_ops(t).tolist() for t in self.space.cell_types},
            "alpha_sign": int(self.relax.sign.item()),
            "warmup": self.in_warmup,
        }

    @torch.no_grad()
    def flip_sign(self) -> None:
        self.relax.flip_sign()
        for a in self.relax.alphas.values():
            m = self.a_opt.state.get(a, {}).get("exp_avg")
            if m is not None:  # Adam keeps going in the mirrored coordinates
                m.neg_()


class DARTSCD(_SignWarmup):
    name = "darts-cd"
    help = "DARTS-CD: one softmax-relaxed edge per cell and step, max-alpha ops elsewhere; warm-up sign flips"
    relaxation = "coordinate"
    requires = frozenset({"sign-flip", "edge-sampling"})
    options = {
        # stem, preprocessing and classifier: a weight update every step (true) or only with the relaxed edges they feed
        "train_shared": True,
        # a cell or edge that only passes gradients on keeps its inputs, not its activations, and runs again in
        # backward (where that lowers the step's peak: the early, large cells): less memory, more time
        "recompute": True,
        # ... only in the first cells holding this share of all cells' activations: the large cells that are
        # cheap to recompute (run again only when the relaxed edge lies before them); 1: every frozen cell
        "recompute_share": 0.7,
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recompute = bool(self.opts.recompute)
        self.recompute_share = float(self.opts.recompute_share)
        if not 0.0 <= self.recompute_share <= 1.0:
            raise ConfigError(f"darts-cd.recompute_share must be between 0 and 1, got {self.recompute_share}")
        self.edge_params = self.net.edge_parameters()
        self.shared = self.net.shared_parameters()
        on_edges = {id(p) for ps in self.edge_params.values() for p in ps}
        self.shared_params = [p for p in self.weights if id(p) not in on_edges]

    def relaxed_rows(self) -> dict:
        """{cell type: [E] bool}: the alpha rows relaxed in this step in some cell of that type."""
        rows = {t: torch.zeros(self.relax.alphas[t].shape[0], dtype=torch.bool) for t in self.space.cell_types}
        for cell_type, index in self.net.cell_keys():
            rows[cell_type][self.relax.relaxed_edges(cell_type, index)] = True
        return rows

    def trainable_weights(self) -> list[nn.Parameter]:
        """The weights updated in this step: the relaxed edges' ops and the shared parts (``train_shared``).

        ``train_shared`` false: a cell's preprocessing moves with the relaxed edges of its cell
        (it feeds all of them), the stem with those of cells 0 and 1 (it is their input), the
        classifier every step (every edge feeds it; its gradient records nothing before it).
        """
        relaxed = {index: self.relax.relaxed_edges(t, index) for t, index in self.net.cell_keys()}
        if self.opts.train_shared:
            params = list(self.shared_params)
        else:
            fed = [index for index, edges in relaxed.items() if edges]
            params = list({id(p): p for key in ("classifier", *fed) for p in self.shared.get(key, [])}.values())
        for index, edges in relaxed.items():
            for e in edges:
                params += self.edge_params[(index, e)]
        return list({id(p): p for p in params}.values())  # once each (a recurrent node's edges share a matrix)

    def weight_step(self, batch) -> dict:
        params = self.trainable_weights()
        with self.recording(params):
            loss, logits = self.loss(batch)
            # gradients of the other edges' ops are never computed; their .grad is None, so SGD skips them
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p in self.weights:
            p.grad = None
        self.apply_weight_grads(params, grads)
        return {"loss": loss.item(), "acc": accuracy(logits, batch[1])}

    def frozen_arch_rows(self) -> dict:
        """After the warm-up only the relaxed rows move: Adam leaves the others' values and moments as they are."""
        if self.in_warmup:
            return {}
        return {self.relax.alphas[t]: ~rows for t, rows in self.relaxed_rows().items()}


class MaxAlpha(_SignWarmup):
    name = "max-alpha"
    help = "max-alpha (DARTS-CD's ablation): every edge runs only its max-alpha op (straight-through to alpha)"
    relaxation = "max-alpha"
    options = {"warmup_epochs": 0}
