"""DARTS (Liu et al., ICLR 2019): first order, and second order with the unrolled weight step."""

from __future__ import annotations

import contextlib

import torch

from ..runtime.distributed import average_gradients
from .base import SearchMethod, accuracy


class DARTS(SearchMethod):
    """Per step (the base frame): an architecture step on a val batch when the schedule says so, then a weight step."""

    name = "darts"
    help = "DARTS, first order: alpha follows grad of L_val at the current weights"


class DARTS2(DARTS):
    name = "darts2"
    help = "DARTS, second order: unrolled weight step, finite-difference Hessian-vector product"
    # R = hvp_epsilon / ||v|| as in the DARTS code; smaller values are more exact in float64
    # clip_virtual: clip the virtual step's gradient at search.grad_clip (the reference's recurrent architect does)
    options = {"hvp_epsilon": 0.01, "clip_virtual": False}

    def arch_step(self, val_batch, train_batch) -> dict:
        # float32 whatever the run's precision: R * v is far below a bf16 step of the weights, so the
        # finite-difference Hessian-vector product would be rounding noise under autocast
        full = getattr(self.net, "full_precision", contextlib.nullcontext)
        with full():
            grads, loss, logits = self.unrolled_arch_grads(train_batch, val_batch)
        reg = self.regularization()
        if torch.is_tensor(reg) and reg.requires_grad:
            extra = torch.autograd.grad(reg, self.arch, allow_unused=True)
            grads = [g if e is None else (e if g is None else g + e) for g, e in zip(grads, extra)]
        self.arch_step_with(grads)
        return {"arch_loss": loss.item(), "arch_acc": accuracy(logits, val_batch[1])}

    def unrolled_arch_grads(self, train_batch, val_batch):
        """grad_alpha L_val(w', alpha) - eta * [grad^2_{alpha,w} L_train(w, alpha)] grad_w' L_val(w', alpha),

        w' = w - eta * (mu * momentum + grad_w L_train(w, alpha) + wd * w) (grad clipped if ``clip_virtual``); the
        Hessian-vector product by central finite differences at w +- R v, R = epsilon / ||v||.
        """
        s = self.cfg.search
        eta = self.w_lr
        params = self.weights
        original = [p.detach().clone() for p in params]

        # w' : one virtual SGD step with momentum and weight decay
        loss_t, _ = self.loss(train_batch)
        # averaged over the ranks of a multi-process run (no-op otherwise): every rank takes the same virtual step
        g_t = average_gradients(params, torch.autograd.grad(loss_t, params, allow_unused=True))
        if self.opts.clip_virtual and s.grad_clip:
            norm = torch.sqrt(sum((g * g).sum() for g in g_t if g is not None))
            g_t = [None if g is None else g * (s.grad_clip / (norm + 1e-6)).clamp(max=1.0) for g in g_t]
        with torch.no_grad():
            for p, g in zip(params, g_t):
                buf = self.w_opt.state.get(p, {}).get("momentum_buffer")
                d = s.w_wd * p
                if g is not None:
                    d = d + g
                if buf is not None:
                    d = d + s.w_momentum * buf
                p.sub_(eta * d)

        # at w': gradients of L_val w.r.t. alpha and w'
        loss_v, logits = self.loss(val_batch)
        grads = torch.autograd.grad(loss_v, list(self.arch) + list(params), allow_unused=True)
        g_alpha, v = grads[: len(self.arch)], grads[len(self.arch) :]
        v = [torch.zeros_like(p) if g is None else g for p, g in zip(params, average_gradients(params, v))]
        R = self.opts.hvp_epsilon / torch.sqrt(sum((g * g).sum() for g in v))

        def arch_grad_at(sign: float):
            with torch.no_grad():
                for p, w0, g in zip(params, original, v):
                    p.copy_(w0 + sign * R * g)
            loss, _ = self.loss(train_batch)
            return torch.autograd.grad(loss, self.arch, allow_unused=True)

        g_plus, g_minus = arch_grad_at(1.0), arch_grad_at(-1.0)
        with torch.no_grad():
            for p, w0 in zip(params, original):
                p.copy_(w0)
        out = []
        for g, gp, gm in zip(g_alpha, g_plus, g_minus):
            hvp = None if gp is None else (gp - gm) / (2 * R)
            if g is None:
                out.append(None if hvp is None else -eta * hvp)
            else:
                out.append(g if hvp is None else g - eta * hvp)
        return out, loss_v, logits
