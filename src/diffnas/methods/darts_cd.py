"""DARTS-CD (Ahn, Hong, Kim, IEEE Access 2021): coordinate descent over edges; max-alpha; warm-up.

``darts-cd``: per step the ``coordinate`` relaxation samples the relaxed edge(s) of
each cell (equation 2, Algorithm 1); the architecture step (first order, as in the
paper) and the weight step both see that sample. Only the relaxed edges' op
parameters get a weight update (every other edge's max-alpha op is left exactly as
it is, momentum and weight decay included), plus the stem, the cell preprocessing and
the classifier, which belong to no edge (``search.cd_train_shared``). After the
warm-up, only the relaxed edges' alphas move: the Adam step is restricted to their
rows (the other rows' values and Adam moments are kept, as a lazy/sparse Adam does).

``max-alpha``: every edge runs its max-alpha op; weights and alphas (through the
straight-through one-hot) all learn each step.

Warm-up (both): for the first ``search.warmup_epochs`` epochs the sign of every alpha
is inverted after each epoch (at the start of epochs 1..W), so those epochs alternate
between softmax(alpha) and softmax(-alpha) (equation 3); Adam's first moment is
inverted with it. The alpha weight decay is ``search.warmup_a_wd`` (1e-3) during the
warm-up (epochs 0..W-1), when every alpha decays, and ``search.a_wd`` (0) after.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..spaces.space import CELL_TYPES
from .base import accuracy, set_grads
from .darts import DARTS

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
        "warmup_epochs": 10,  # sign inversion after each of the first W epochs
        "warmup_a_wd": 1e-3,  # alpha weight decay during the warm-up
        "cd_edges": 1,  # M: relaxed edges per cell and step
        "cd_sample": "cell",  # cell (Algorithm 1) | cell_type
        "cd_argmax_none": True,  # the max-alpha op may be `none` (the edge then runs nothing)
        "cd_train_shared": True,  # stem, preprocessing and classifier get a weight update every step
    }
}


class _SignWarmup(DARTS):
    """DARTS first order plus the warm-up: sign inversions and the alpha weight decay switch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not hasattr(self.relax, "flip_sign"):
            raise ConfigError(f"method {self.name} needs the coordinate or max-alpha relaxation")

    @property
    def in_warmup(self) -> bool:
        return self.epoch < self.cfg.search.get("warmup_epochs", 0)

    def epoch_start(self, epoch: int, steps_per_epoch: int) -> None:
        s = self.cfg.search
        if 1 <= epoch <= s.get("warmup_epochs", 0):
            self.flip_sign()
        super().epoch_start(epoch, steps_per_epoch)
        wd = s.get("warmup_a_wd", s.a_wd) if self.in_warmup else s.a_wd
        for group in self.a_opt.param_groups:
            group["weight_decay"] = wd

    def epoch_record(self) -> dict:
        """Per epoch in metrics.jsonl: the max-alpha op of every edge at the epoch's end, and the alphas' sign."""
        return {
            "max_alpha": {t: self.relax.max_alpha_ops(t).tolist() for t in CELL_TYPES},
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
    defaults = PAPER

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not hasattr(self.relax, "relaxed_edges") or self.relax.name == "max-alpha":
            raise ConfigError("method darts-cd needs the coordinate relaxation")
        self.edge_params = {
            (cell.index, e): list(edge.parameters()) for cell in self.net.cells for e, edge in enumerate(cell.edges)
        }
        on_edges = {id(p) for ps in self.edge_params.values() for p in ps}
        self.shared_params = [p for p in self.weights if id(p) not in on_edges]

    def relaxed_rows(self) -> dict:
        """{cell type: [E] bool}: the alpha rows relaxed in this step in some cell of that type."""
        rows = {t: torch.zeros(self.space.num_edges, dtype=torch.bool) for t in CELL_TYPES}
        for cell in self.net.cells:
            rows[cell.cell_type][self.relax.relaxed_edges(cell.cell_type, cell.index)] = True
        return rows

    def trainable_weights(self) -> list[nn.Parameter]:
        """The weights updated in this step: the relaxed edges' ops (+ the shared stem/preprocess/classifier)."""
        params = list(self.shared_params) if self.cfg.search.get("cd_train_shared", True) else []
        for cell in self.net.cells:
            for e in self.relax.relaxed_edges(cell.cell_type, cell.index):
                params += self.edge_params[(cell.index, e)]
        return params

    def weight_step(self, batch) -> dict:
        params = self.trainable_weights()
        loss, logits = self.loss(batch)
        # gradients of the other edges' ops are never computed; their .grad is None, so SGD skips them
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p in self.weights:
            p.grad = None
        self.apply_weight_grads(params, grads)
        self.step_in_epoch += 1
        return {"loss": loss.item(), "acc": accuracy(logits, batch[1])}

    def arch_step_with(self, grads) -> None:
        """Adam on the alphas; after the warm-up only the relaxed rows move (values and moments of the rest kept)."""
        set_grads(self.arch, grads)
        kept = []
        if not self.in_warmup:
            for t, rows in self.relaxed_rows().items():
                a = self.relax.alphas[t]
                frozen = ~rows.to(a.device)
                st = self.a_opt.state.get(a, {})
                moments = {k: st[k][frozen].clone() for k in ("exp_avg", "exp_avg_sq") if k in st}
                kept.append((a, frozen, a.detach()[frozen].clone(), moments))
        self.a_opt.step()
        with torch.no_grad():
            for a, frozen, values, moments in kept:
                a[frozen] = values
                st = self.a_opt.state[a]
                for k in ("exp_avg", "exp_avg_sq"):
                    st[k][frozen] = moments[k] if k in moments else 0.0
        self.arch_steps += 1
        for r in self.regularizers:
            r.after_arch_step(self)


class MaxAlpha(_SignWarmup):
    name = "max-alpha"
    help = "max-alpha (DARTS-CD's ablation): every edge runs only its max-alpha op (straight-through to alpha)"
    relaxation = "max-alpha"
    defaults = {"search": {**PAPER["search"], "warmup_epochs": 0}}
