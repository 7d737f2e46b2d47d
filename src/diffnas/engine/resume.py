"""Loading a job's checkpoint on resume: what the (possibly changed) config keeps, and one-line errors.

A resume may change the learning rates, their floors and the number of epochs
(``catalog.RESUMABLE``). A job is built from the new config, so its optimizers and cosine
schedules start with the new values; loading the checkpoint would put the old ones back.
``keep_config`` loads and then reinstates them, so "lower the learning rate and --resume"
works; with an unchanged config it changes nothing, and a resume stays bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR

from ..errors import DiffnasError


@contextmanager
def fitting(path: Path):
    """A checkpoint of another run's shapes, or with missing keys, is a one-line error naming the file."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DiffnasError(f"{path}: does not fit this run ({type(e).__name__}: {detail[:200]})") from None


def keep_config(owner, load: Callable[[], None]) -> None:
    """Run ``load`` (the checkpoint into ``owner``, a method or a job), then give ``owner``'s optimizers and
    cosine schedules back the learning rates, floors and lengths they had from the config."""
    parts = vars(owner).values()
    schedules = [s for s in parts if isinstance(s, CosineAnnealingLR)]
    scheduled = {id(s.optimizer) for s in schedules}
    plain = [o for o in parts if isinstance(o, Optimizer) and id(o) not in scheduled]
    wanted = [(list(s.base_lrs), s.eta_min, s.T_max) for s in schedules]
    lrs = [[g["lr"] for g in o.param_groups] for o in plain]
    load()
    for s, (base_lrs, eta_min, t_max) in zip(schedules, wanted):
        if (list(s.base_lrs), s.eta_min, s.T_max) == (base_lrs, eta_min, t_max):
            continue  # as saved: the loaded learning rate stands (bit for bit)
        s.base_lrs, s.eta_min, s.T_max = base_lrs, eta_min, t_max
        for group, base in zip(s.optimizer.param_groups, base_lrs):
            group["initial_lr"] = base
            group["lr"] = eta_min + (base - eta_min) * (1 + math.cos(math.pi * s.last_epoch / t_max)) / 2
        s._last_lr = [g["lr"] for g in s.optimizer.param_groups]
    for o, values in zip(plain, lrs):
        for group, lr in zip(o.param_groups, values):
            group["lr"] = lr
