"""DARTS-PRIME's dynamic FIMT schedule (Maile et al., AAAI 2022, Algorithm 1 lines 3-11).

After every weight step, the trace of the empirical Fisher information of the
mini-batch, F = tr(G G^T) = sum over all network weights of grad^2 (eq. 6, weights
only, measured before gradient clipping), enters an exponential moving average
F_n = lambda F + (1 - lambda) F_{n-1} (eq. 7; the first value is F itself). Before the
next weight step an architecture step happens iff F_n < h; then h *= h_d, otherwise
h *= h_i, with h_d = exp(-r ln h_i). Under a constant F the threshold settles into a
cycle of one architecture step per r weight steps without one (r + 1 weight steps).

Spec: ``fimt`` (paper values), ``fimt:R`` (expected ratio R), or
``fimt:r=10,h0=1.0,hi=1.05,lambda=0.2``.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from . import Schedule

PAPER = {"r": 10.0, "h0": 1.0, "hi": 1.05, "lambda": 0.2}


class FIMT(Schedule):
    name = "fimt"

    def __init__(self, r: float = 10.0, h0: float = 1.0, hi: float = 1.05, lam: float = 0.2, start_epoch: int = 0):
        super().__init__(start_epoch)
        if r <= 0 or h0 <= 0 or hi < 1 or not 0 < lam <= 1:
            raise ConfigError(
                f"schedule fimt needs r > 0, h0 > 0, hi >= 1, 0 < lambda <= 1; got {r}, {h0}, {hi}, {lam}"
            )
        self.r, self.hi, self.lam = float(r), float(hi), float(lam)
        self.hd = math.exp(-self.r * math.log(self.hi))
        self.h = float(h0)
        self.ewma: float | None = None  # F_n, None before the first weight step
        self.fisher: float | None = None  # F of the last weight step
        self._last = {}

    @classmethod
    def from_spec(cls, arg: str, start_epoch: int) -> FIMT:
        values = dict(PAPER)
        if arg:
            for part in arg.split(","):
                key, has_value, value = part.partition("=")
                key, value = (key.strip(), value) if has_value else ("r", key)
                if key not in values:
                    raise ValueError(f"unknown fimt parameter '{key}'; use r, h0, hi, lambda")
                values[key] = float(value)
        return cls(values["r"], values["h0"], values["hi"], values["lambda"], start_epoch)

    def decide(self, fimt: float | None) -> bool:
        """One decision of Algorithm 1 (lines 6-11) on the moving average ``fimt``; updates h."""
        threshold = self.h
        if fimt is None:  # no weight step yet: nothing to compare (Algorithm 1 starts with a weight step)
            due = False
        elif fimt < self.h:
            due, self.h = True, self.h * self.hd
        else:
            due, self.h = False, self.h * self.hi
        self._last = {"arch_step": due, "fimt": fimt, "fimt_threshold": threshold}
        return due

    def arch_step_due(self, method) -> bool:
        if method.epoch < self.start_epoch:
            self._last = {"arch_step": False, "fimt": self.ewma, "fimt_threshold": self.h}
            return False
        return self.decide(self.ewma)

    def observe(self, fisher: float) -> None:
        """Fold one mini-batch's Fisher trace into the moving average (eq. 7)."""
        self.fisher = float(fisher)
        self.ewma = self.fisher if self.ewma is None else self.lam * self.fisher + (1 - self.lam) * self.ewma

    def after_weight_step(self, method) -> None:
        self.observe(fisher_trace(method))

    def record(self) -> dict:
        """arch_step: whether this step made an architecture step; fimt / fimt_threshold: the pair it compared
        (F_{n-1} and h); fisher: F of this step's weight gradients."""
        return {**self._last, "fisher": self.fisher}

    def state_dict(self) -> dict:
        return {"h": self.h, "ewma": self.ewma, "fisher": self.fisher}

    def load_state_dict(self, state: dict) -> None:
        self.h, self.ewma, self.fisher = state["h"], state["ewma"], state["fisher"]


def fisher_trace(method) -> float:
    """tr(G G^T) = ||G||^2 of the last weight step's gradient, before clipping (the method keeps the
    pre-clip norm when it clips; the installed gradients are clipped in place).

    In a multi-process run (torchrun) G is the gradient averaged over the ranks (``set_grads``),
    so F is the global batch's and the same on every rank: every rank takes the same decision."""
    norm = getattr(method, "last_grad_norm", None)
    if norm is not None:
        return float(norm) ** 2
    grads = [p.grad for p in method.weights if p.grad is not None]
    if not grads:
        return 0.0
    return float(sum(torch.sum(g.detach().float() ** 2) for g in grads))
