"""RARTS (Xue, Qi, Xin, IEEE Access 2022): relaxed single-level search with network splitting.

Two networks of the same shape share one architecture alpha: the auxiliary network w
is trained on the train split, the primary network y on the val split, and the
relaxed Lagrangian (paper eq. 4, eq. 5 with the latency term)

    L(y, w, alpha) = L_v(y, alpha) + lambda L_t(w, alpha) + beta/2 ||y - w||^2 [+ <softmax(alpha), Lat>]

is minimised by one Gauss-Seidel sweep per step (eq. 7 / 8): w, then y with the new
w, then alpha with the new w and y. ``rarts_step`` is that sweep as a pure function on
parameter lists and loss closures, so the paper's scalar model (section III-D) and the
CNN supernets run exactly the same code. With y tied to w (the same parameter list)
the y step vanishes and the sweep is first-order MiLeNAS (``milenas``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from ..config import DROP
from ..errors import ConfigError
from .base import SearchMethod, accuracy

Params = Sequence[torch.Tensor]
Update = Callable[[Params, list], None]


def sgd(lr: float) -> Update:
    """Plain gradient descent p <- p - lr * g (the paper's update with a fixed learning rate)."""

    def update(params: Params, grads: list) -> None:
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.sub_(lr * g)

    return update


def _grads(loss: torch.Tensor, params: Params) -> list:
    return list(torch.autograd.grad(loss, list(params), allow_unused=True))


def _value_and_grads(closure: Callable[[], torch.Tensor], params: Params) -> tuple[float, list]:
    """The closure's value and its gradients; the graph goes out of scope here, before the next forward."""
    loss = closure()
    return loss.item(), _grads(loss, params)


def _coupled(grads: list, scale: float, params: Params, other: Params, beta: float) -> list:
    """scale * grad + beta * (p - q): the gradient of scale * loss + beta/2 ||p - q||^2 in p."""
    out = []
    for g, p, q in zip(grads, params, other):
        total = None if g is None else scale * g
        if beta and p is not q:
            pull = beta * (p.detach() - q.detach())
            total = pull if total is None else total + pull
        out.append(total)
    return out


def rarts_step(
    w: Params,
    y: Params,
    alpha: Params,
    loss_t: Callable[[], torch.Tensor],
    loss_v: Callable[[], torch.Tensor],
    lam: float,
    beta: float,
    update_w: Update,
    update_y: Update,
    update_alpha: Update | None,
    penalty: Callable[[], torch.Tensor | float] | None = None,
    phase: Callable[[str], contextlib.AbstractContextManager] = lambda name: contextlib.nullcontext(),
) -> dict:
    """One iteration of eq. (7) (eq. (8) with ``penalty``), in the Gauss-Seidel order.

    w^{t+1}     = w - eta_w [lambda grad_w L_t(w, alpha) + beta (w - y)]
    y^{t+1}     = y - eta_y [grad_y L_v(y, alpha) + beta (y - w^{t+1})]
    alpha^{t+1} = alpha - eta_a [lambda grad_a L_t(w^{t+1}, alpha) + grad_a L_v(y^{t+1}, alpha) + grad_a penalty(alpha)]

    ``loss_t()`` evaluates L_t at the current values of ``w`` and ``alpha``, ``loss_v()``
    L_v at those of ``y`` and ``alpha``; ``update_*(params, grads)`` applies a descent
    step in place (``sgd(lr)`` is the paper's; the CNN method passes its optimizers).
    ``y`` holding the very tensors of ``w`` ties the networks (MiLeNAS): the coupling term is zero and there is no
    y step. ``update_alpha=None`` skips the architecture step (a schedule said no). ``phase(name)``
    wraps the weight steps ("weight") and the architecture step ("arch"), forward and backward
    included (a benchmark's timer).
    Returns the four losses as floats: ``loss_t``/``loss_v`` before the weight steps,
    ``arch_loss_t``/``arch_loss_v`` at the new weights.
    """
    tied = len(y) == len(w) and all(p is q for p, q in zip(w, y))
    out = {}
    with phase("weight"):
        # 1. the auxiliary network w on L_t, pulled towards y
        out["loss_t"], g = _value_and_grads(loss_t, w)
        update_w(w, _coupled(g, lam, w, y, 0.0 if tied else beta))
        # 2. the primary network y on L_v, pulled towards the new w
        if not tied:
            out["loss_v"], g = _value_and_grads(loss_v, y)
            update_y(y, _coupled(g, 1.0, y, w, beta))
    if update_alpha is None:
        return out
    with phase("arch"):
        # 3. alpha on lambda L_t(w^{t+1}) + L_v(y^{t+1}) (+ penalty); one graph alive at a time
        out["arch_loss_t"], g_t = _value_and_grads(loss_t, alpha)
        out["arch_loss_v"], g_v = _value_and_grads(loss_v, alpha)
        grads = [_add(None if a is None else lam * a, b) for a, b in zip(g_t, g_v)]
        if penalty is not None:
            p = penalty()
            if torch.is_tensor(p) and p.requires_grad:
                grads = [_add(g, e) for g, e in zip(grads, _grads(p, alpha))]
        update_alpha(alpha, grads)
    if tied:
        out["loss_v"] = out["arch_loss_v"]
    return out


def _add(a, b):
    if a is None:
        return b
    return a if b is None else a + b


class RARTS(SearchMethod):
    """Per step: ``rarts_step`` on a train batch (for w) and a val batch (for y), with the optimizers."""

    name = "rarts"
    help = "RARTS: two supernets (w on train, y on val) share alpha; Gauss-Seidel steps on the relaxed Lagrangian"
    options = {
        "lambda": 1.0,  # weight of L_t in the Lagrangian (paper: a hyperparameter, no CIFAR value)
        "beta": 1.0,  # strength of the ||y - w||^2 coupling
        "y_init": "copy",  # copy: y starts as w; independent: its own random init
        "y_lr": None,  # None: y follows w's learning rate schedule
    }
    data_keys = (*SearchMethod.data_keys, "arch_loss_t", "loss_y", "acc_y")
    tied = False

    def __init__(self, cfg, space, in_channels: int, num_classes: int, device):
        super().__init__(cfg, space, in_channels, num_classes, device)
        s, o = cfg.search, self.opts
        self.lam = float(o["lambda"])
        self.beta = 0.0 if self.tied else float(o.beta)
        if self.tied:
            self.net_y, self.weights_y = self.net, self.weights
            self.y_opt = self.y_lr_schedule = None
            return
        init = o.y_init
        if init not in ("copy", "independent"):
            raise ConfigError(f"rarts.y_init must be 'copy' or 'independent', got {init!r}")
        self.net_y = self.make_supernet().to(device)  # a second supernet on the same relaxation object
        if init == "copy":
            with torch.no_grad():
                for p, q in zip(self.net_y.weight_parameters(), self.weights):
                    p.copy_(q)
        self.weights_y = self.net_y.weight_parameters()
        y_lr = o.y_lr or s.w_lr
        self.y_opt = torch.optim.SGD(self.weights_y, y_lr, momentum=s.w_momentum, weight_decay=s.w_wd)
        self.y_lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.y_opt, s.epochs, eta_min=s.w_lr_min * y_lr / s.w_lr
        )

    def modules(self) -> list:
        return [self.net] if self.tied else [self.net, self.net_y]

    def epoch_end(self) -> None:
        super().epoch_end()
        if self.y_lr_schedule is not None:
            self.y_lr_schedule.step()

    def _optimizer_update(self, opt) -> Callable:
        def update(params, grads):
            # the FIMT schedule reads w's gradient norm (the network trained on the train split), not y's
            self.apply_weight_grads(params, grads, opt, record_norm=opt is self.w_opt)

        return update

    def _arch_update(self, params, grads) -> None:
        self.arch_step_with(grads)

    def updates(self, batch, val_batch_stream, do_arch: bool) -> dict:
        """The Gauss-Seidel sweep: w, then y, then alpha (the frame's arch-then-weight order does not apply)."""
        val = val_batch_stream.next()  # y trains on the val split at every step
        logits, first_acc = {}, {}

        def loss_on(key, net, b):
            def closure():
                loss, out = self.loss(b, net)
                logits[key] = out.detach()  # no reference to the graph survives the closure's caller
                first_acc.setdefault(key, accuracy(out, b[1]))
                return loss

            return closure

        rec = rarts_step(
            self.weights,
            self.weights_y,
            self.arch,
            loss_on("t", self.net, batch),
            loss_on("v", self.net_y, val),
            self.lam,
            self.beta,
            self._optimizer_update(self.w_opt),
            self._optimizer_update(self.y_opt) if self.y_opt is not None else None,
            self._arch_update if do_arch else None,
            penalty=self.regularization if self.regularizers else None,
            phase=self.phase,
        )
        record = {"loss": rec["loss_t"], "acc": first_acc["t"]}
        if not self.tied:
            record.update(loss_y=rec["loss_v"], acc_y=first_acc["v"])
        if do_arch:
            record.update(
                arch_loss=rec["arch_loss_v"], arch_loss_t=rec["arch_loss_t"], arch_acc=accuracy(logits["v"], val[1])
            )
        if not self.tied:
            with torch.no_grad():
                record["wy_dist"] = torch.sqrt(
                    sum(((p - q) ** 2).sum() for p, q in zip(self.weights, self.weights_y))
                ).item()
        return record

    def state_dict(self) -> dict:
        state = super().state_dict()
        if not self.tied:
            state.update(
                net_y=self.net_y.state_dict(),
                y_opt=self.y_opt.state_dict(),
                y_lr_schedule=self.y_lr_schedule.state_dict(),
            )
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if not self.tied:
            self.net_y.load_state_dict(state["net_y"])
            self.y_opt.load_state_dict(state["y_opt"])
            self.y_lr_schedule.load_state_dict(state["y_lr_schedule"])


class MiLeNAS(RARTS):
    """First-order MiLeNAS as RARTS with y tied to w: w on lambda L_t, alpha on lambda L_t + L_v at the new w."""

    name = "milenas"
    help = "MiLeNAS, first order: RARTS with y = w (alpha on lambda*L_train + L_val, one network)"
    options = {"beta": DROP, "y_init": DROP, "y_lr": DROP}  # one network: no y, no coupling
    tied = True
