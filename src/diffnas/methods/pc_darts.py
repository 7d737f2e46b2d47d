"""PC-DARTS (Xu et al., ICLR 2020) and IDARTS (Xue et al., ICCV 2021) on top of it.

PC-DARTS is DARTS (first order) with the ``partial-channels`` relaxation (partial
channel connections, K = 4, and edge normalization beta) and its paper's settings.

IDARTS updates alpha and beta on L_val as PC-DARTS does; from epoch T on it then
backtracks the alphas of the edges whose rank R(|beta|) is below a threshold zeta
(eqs. 12-14, Algorithm 1):

    alpha_hat = alpha^{t+1} + eta1 * eta2 * gamma (.) alpha^t,
    gamma_{l,m} = g_hat_l * dbeta_l / dalpha_{l,m},   g_hat = (dG/dbeta) / alpha^t   (eq. 6)

with dbeta/dalpha approximated by the differences of the iterates t -> t+1. Every
reading the paper leaves open is an option of the method (``idarts.*``, docs/methods/idarts.md).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .base import accuracy
from .darts import DARTS


class PCDARTS(DARTS):
    name = "pc-darts"
    help = "PC-DARTS: partial channels (K=4) and edge normalization beta, first-order arch steps"
    relaxation = "partial-channels"  # K = 4 is the relaxation's own default (relax.k)
    defaults = {
        "search": {
            "batch_size": 256,
            "w_lr": 0.1,
            "w_lr_min": 0.0,
            "a_lr": 6e-4,
            "a_wd": 1e-3,
            "arch_start_epoch": 15,
        }
    }

    def epoch_record(self) -> dict:
        """The edge betas and their per-node softmax, per cell type (the engine logs the alphas)."""
        out = super().epoch_record()
        relax = self.relax
        if "edge-betas" in relax.provides:  # under another relaxation there are no betas to log
            with torch.no_grad():
                out["betas"] = {t: relax.betas[t].detach().clone() for t in self.space.cell_types}
                out["edge_weights"] = {t: relax.edge_weights(t).detach() for t in self.space.cell_types}
        return out


class IDARTS(PCDARTS):
    name = "idarts"
    help = "IDARTS: PC-DARTS plus backtracking of the alphas on low-|beta| edges from epoch T"
    requires = frozenset({"edge-betas"})
    options = {
        "start_epoch": 25,  # T: backtracking from this epoch on
        "eta2": 0.04,  # weight of the backtracking
        "lambda": 0.015,  # growth of the threshold zeta (eq. 14)
        "zeta": "growing",  # growing: floor((K - T) lambda L) at epoch K | printed: floor((S - T) lambda L)
        "rank": "smallest",  # which edges rank below zeta: smallest |beta| first | largest
        "grad": "raw",  # dG/dbeta: raw = the autograd gradient | step = (beta^t - beta^{t+1}) / eta1
        "gamma": "eq6",  # eq6: g_hat = dG/dbeta / alpha^t (the alpha^t cancels) | plain: g_hat = dG/dbeta
        "fd": "elementwise",  # dbeta_l/dalpha_lm: elementwise ratio | secant: dbeta dalpha / ||dalpha||^2
        "fd_eps": 1e-8,  # |dalpha| (or ||dalpha_l||) at or below this gives a zero derivative
    }

    CHOICES = {
        "zeta": ("growing", "printed"),
        "rank": ("smallest", "largest"),
        "grad": ("raw", "step"),
        "gamma": ("eq6", "plain"),
        "fd": ("elementwise", "secant"),
    }

    def __init__(self, cfg, space, in_channels: int, num_classes: int, device):
        super().__init__(cfg, space, in_channels, num_classes, device)
        for key, allowed in self.CHOICES.items():
            if self.opts[key] not in allowed:
                raise ConfigError(f"idarts.{key} must be one of {', '.join(allowed)}, got '{self.opts[key]}'")
        self._epoch_backtracks = self._zero_counts()

    # -- the threshold and the edges below it ---------------------------------------------
    def zeta(self, epoch: int | None = None) -> int:
        """Eq. (14): how many edges per cell type are backtracked at this epoch (0 before T)."""
        o, edges = self.opts, self.space.num_edges
        epoch = self.epoch if epoch is None else epoch
        if epoch < o.start_epoch:
            return 0
        k = epoch if o.zeta == "growing" else self.cfg.search.epochs
        value = (k - o.start_epoch) * o["lambda"] * edges
        return max(0, min(edges, math.floor(value + 1e-9)))

    def edges_below(self, beta: torch.Tensor, zeta: int) -> list[int]:
        """The ``zeta`` edges with rank R(|beta|) < zeta; rank 0 is the smallest |beta| unless idarts_rank=largest."""
        if zeta <= 0:
            return []
        descending = self.opts.rank == "largest"
        order = torch.argsort(beta.detach().abs(), descending=descending, stable=True)
        return sorted(order[:zeta].tolist())

    # -- backtracking (eq. 12) ---------------------------------------------------------------
    def backtrack_correction(self, g_beta, alpha_t, alpha_t1, beta_t, beta_t1) -> torch.Tensor:
        """[E, O]: gamma (.) alpha^t for every edge, from dG/dbeta^t and the iterates t, t+1."""
        o = self.opts
        d_alpha = alpha_t1 - alpha_t
        d_beta = (beta_t1 - beta_t)[:, None]
        eps = o.fd_eps
        if o.fd == "elementwise":
            ok = d_alpha.abs() > eps
            dbeta_dalpha = torch.where(ok, d_beta / torch.where(ok, d_alpha, torch.ones_like(d_alpha)), 0.0)
        else:  # secant: the smallest vector v with v . dalpha_l = dbeta_l
            sq = (d_alpha * d_alpha).sum(1, keepdim=True)
            ok = sq > eps * eps
            dbeta_dalpha = torch.where(ok, d_beta * d_alpha / torch.where(ok, sq, torch.ones_like(sq)), 0.0)
        if o.grad == "step":  # the gradient plain gradient descent would have taken (eq. 12's premise)
            g = (beta_t - beta_t1) / self.a_opt.param_groups[0]["lr"]
        else:
            g = torch.zeros_like(beta_t) if g_beta is None else g_beta
        # eq6: gamma = (g / alpha^t) * dbeta/dalpha, so gamma (.) alpha^t = g * dbeta/dalpha (no division by alpha)
        correction = g[:, None] * dbeta_dalpha
        if o.gamma == "plain":
            correction = correction * alpha_t
        return correction

    def arch_step(self, val_batch, train_batch) -> dict:
        relax = self.relax
        alpha_t = {t: relax.alphas[t].detach().clone() for t in self.space.cell_types}
        beta_t = {t: relax.betas[t].detach().clone() for t in self.space.cell_types}
        loss, logits = self.loss(val_batch)
        total = loss + self.regularization()
        grads = torch.autograd.grad(total, self.arch, allow_unused=True)
        self.arch_step_with(grads)  # alpha^{t+1}, beta^{t+1} (eq. 4)
        record = {"arch_loss": loss.item(), "arch_acc": accuracy(logits, val_batch[1])}
        zeta = self.zeta()
        if self.epoch < self.opts.start_epoch:
            return record
        by_id = {id(p): p.grad for p in self.arch}  # as installed: averaged over the ranks of a multi-process run
        eta = self.a_opt.param_groups[0]["lr"] * self.opts.eta2  # eta1 * eta2
        backtracked, biggest = {}, 0.0
        for t in self.space.cell_types:
            alpha, beta = relax.alphas[t], relax.betas[t]
            edges = self.edges_below(beta, zeta)  # eq. 13 on the updated beta
            backtracked[t] = edges
            if not edges:
                continue
            corr = self.backtrack_correction(by_id.get(id(beta)), alpha_t[t], alpha.detach(), beta_t[t], beta.detach())
            step = torch.zeros_like(corr)
            step[edges] = eta * corr[edges]
            with torch.no_grad():
                alpha.add_(step)
            biggest = max(biggest, step.abs().max().item())
            for e in edges:
                self._epoch_backtracks[t][e] += 1
        record.update({"zeta": zeta, "backtracked": backtracked, "backtrack_max": biggest})
        return record

    # -- per-epoch log (Figure 7: which edges were backtracked, alpha per edge) -------------
    def _zero_counts(self) -> dict:
        return {t: [0] * self.space.num_edges for t in self.space.cell_types}

    def epoch_start(self, epoch: int, steps_per_epoch: int) -> None:
        super().epoch_start(epoch, steps_per_epoch)
        self._epoch_backtracks = self._zero_counts()

    def epoch_record(self) -> dict:
        counts = self._epoch_backtracks
        return {
            **super().epoch_record(),
            "zeta": self.zeta(),
            "backtracked_edges": {t: [e for e, c in enumerate(counts[t]) if c] for t in self.space.cell_types},
            "backtrack_counts": {t: list(counts[t]) for t in self.space.cell_types},
        }
