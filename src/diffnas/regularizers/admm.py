"""DARTS-PRIME's ADMM regularization (Maile et al., AAAI 2022, supplement S1.2, eqs S1-S5).

The architecture loss gets (rho_a / 2) * ||act(alpha) - z + u||^2 (eq. S1, one term per
cell type); every ``every`` architecture steps (10) z <- Pi_S(act(alpha) + u) (S3) and
u <- lambda_u * u + act(alpha) - z (S5, lambda_u = 0.8). z is always the genotype rule
applied to act(alpha) + u, so a valid discrete architecture; u starts at 0 and z at
Pi_S(act(alpha)) when the first penalty is taken.

ADMM runs on the activated weights act(alpha) (softmax, or clamp for CRB), the space Pi_S
discretizes: a binary z is not comparable with raw softmax logits.

Options: a number (rho_a) or ``{rho: 0.1, lambda_u: 0.8, every: 10}``.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from . import Regularizer, register
from .proximity import rho_option


@register
class ADMM(Regularizer):
    name = "admm"
    requires = frozenset({"projection"})

    def __init__(self, options, space):
        super().__init__(options, space)
        o = {"rho": 0.1, "lambda_u": 0.8, "every": 10.0}
        o.update(rho_option(options, self.name, 0.1, keys=("rho", "lambda_u", "every")))
        if o["every"] < 1 or o["every"] != int(o["every"]):
            raise ConfigError(f"reg.admm.every must be a positive integer, got {o['every']}")
        self.rho, self.lambda_u, self.every = o["rho"], o["lambda_u"], int(o["every"])
        self.z: dict | None = None
        self.u: dict | None = None
        self.count = 0  # architecture steps since the last z, u update
        self.updates = 0

    def _init(self, method) -> None:
        if self.z is None:
            acts = {t: method.relax.weights(t).detach() for t in self.space.cell_types}
            self.z = {t: self.space.projection(t, a) for t, a in acts.items()}
            self.u = {t: torch.zeros_like(a) for t, a in acts.items()}

    def penalty(self, method) -> torch.Tensor:
        self._init(method)
        return (self.rho / 2) * sum(
            torch.sum((method.relax.weights(t) - self.z[t] + self.u[t]) ** 2) for t in self.space.cell_types
        )

    def update(self, method) -> None:
        """Equations S3 and S5."""
        self._init(method)
        with torch.no_grad():
            for t in self.space.cell_types:
                a = method.relax.weights(t).detach()
                self.z[t] = self.space.projection(t, a + self.u[t])
                self.u[t] = self.lambda_u * self.u[t] + a - self.z[t]
        self.updates += 1

    def after_arch_step(self, method) -> None:
        self.count += 1
        if self.count % self.every == 0:
            self.count = 0
            self.update(method)

    def state_dict(self) -> dict:
        return {"z": self.z, "u": self.u, "count": self.count, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.z, self.u, self.count, self.updates = state["z"], state["u"], state["count"], state["updates"]
