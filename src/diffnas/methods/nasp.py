"""NASP (Yao, Xu, Tu, Zhu, AAAI 2020): proximal iterations with a discrete constraint.

Algorithm 2, per training step (``search.nasp_update: nasp``):

1. A_bar_t = prox_C1(A_t)                        (one op per edge, two edges per node)
2. A_{t+1} = prox_C2(A_t - eps grad_{A_bar} F(w_t, A_bar_t)),  F = L_val + eta R(A)
   the gradient at the discrete architecture, applied to the continuous alphas (Adam),
   then clipped to [0, 1]; no second-order term
3. A_bar_{t+1} = prox_C1(A_{t+1})
4. a weight step on L_train(w, A_bar_{t+1}) running only the selected op of each kept edge.

The two baselines of the paper's section 4.3 (its Figure 5), as ``nasp.update``:

- ``proximal`` (eq. 10, standard proximal step): A_{t+1} = prox_C(A_t - eps grad), with
  prox_C = prox_C1(prox_C2(.)) (Proposition 1) as the exact Euclidean projection: the alphas
  themselves stay discrete (one non-zero entry, in [0, 1], per kept edge).
- ``lazy`` (eq. 11, lazy proximal step): A_bar_t = prox_C1(A_t), A_{t+1} = A_t - eps grad,
  with no clip: A may leave [0, 1].

All three take the gradient at the discrete architecture (first order); the discretization,
tie-breaking and which ops run are the relaxation's (``relax/proximal.py``).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import SearchMethod, accuracy

UPDATES = ("nasp", "proximal", "lazy")
ARCH_OPS = ("all", "selected")


class NASP(SearchMethod):
    name = "nasp"
    help = "NASP: discrete architecture in every forward, proximal steps on continuous alphas in [0, 1]"
    relaxation = "discrete"
    requires = frozenset({"discrete"})
    defaults = {"space": "darts-nonone"}
    options = {
        "update": "nasp",  # nasp (Algorithm 2) | proximal (eq. 10) | lazy (eq. 11)
        "arch_ops": "all",  # ops computed in the architecture step: all (authors' code) | selected
    }

    def __init__(self, cfg, space, in_channels: int, num_classes: int, device):
        update, arch_ops = cfg[self.name]["update"], cfg[self.name]["arch_ops"]  # (`update` is a dict method)
        if update not in UPDATES:
            raise ConfigError(f"nasp.update must be one of {', '.join(UPDATES)}, got '{update}'")
        if arch_ops not in ARCH_OPS:
            raise ConfigError(f"nasp.arch_ops must be one of {', '.join(ARCH_OPS)}, got '{arch_ops}'")
        super().__init__(cfg, space, in_channels, num_classes, device)
        self.update = update
        self.arch_phase = "arch" if arch_ops == "all" else "arch_selected"
        if self.update == "proximal":  # start on the constraint set, A_0 in C
            self.project()

    # the frame's order is Algorithm 2's: the architecture step, then (the relaxation discretizes the
    # new alphas again, A_bar_{t+1} = prox_C1(A_{t+1})) the weight step

    def arch_step(self, val_batch, train_batch=None) -> dict:
        """grad_{A_bar} (L_val + regularizers) at A_bar = prox_C1(A), applied to A; then the update's prox."""
        before = {t: self.relax.mask(t).clone() for t in self.relax.alphas}
        with self.relax.computing(self.arch_phase):
            loss, logits = self.loss(val_batch)
            total = loss + self.regularization()
            grads = torch.autograd.grad(total, self.arch, allow_unused=True)
        self.arch_step_with(grads)
        self.project()
        # how many (edge, op) choices of A_bar this step changed (the paper's Fig. 4: A_bar is stable)
        changed = sum(int((self.relax.mask(t) != m).any(1).sum()) for t, m in before.items())
        return {"arch_loss": loss.item(), "arch_acc": accuracy(logits, val_batch[1]), "changed_edges": changed}

    @torch.no_grad()
    def project(self) -> None:
        """The proximal step of the chosen update on the stored alphas."""
        if self.update == "lazy":
            return
        for t, a in self.relax.alphas.items():
            a.clamp_(0.0, 1.0)  # prox_C2
            if self.update == "proximal":
                a.mul_(self.relax.prox_c1(a, t))  # prox_C1, keeping the values: the Euclidean projection

    def weight_step(self, batch) -> dict:
        with self.relax.computing("weight"):
            return super().weight_step(batch)
