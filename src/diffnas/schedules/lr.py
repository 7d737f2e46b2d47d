"""Learning-rate schedules of the weights, per epoch, shared by the search and the retraining.

``cosine`` (to a floor; DARTS), ``exponential`` (x gamma per epoch; DARTS on ImageNet),
``linear`` (PC-DARTS on ImageNet: to zero over the epochs after the warm-up, a gentler
slope in the last ``LINEAR_TAIL`` epochs) and ``step`` (x0.1 at fractions of the epochs;
Network Slimming's fine-tuning: at 50 % and 75 %); any of them after a linear warm-up that
overrides the first epochs' values (PC-DARTS: lr * (epoch + 1) / warmup).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError

LR_SCHEDULES = ("cosine", "exponential", "linear", "step")
LINEAR_TAIL = 5  # PC-DARTS's last epochs with the smaller slope (lr / 250 is large at its last step)


def lr_factor(
    kind: str, epoch: int, epochs: int, warmup: int = 0, gamma: float = 0.97, floor: float = 0.0, milestones=()
) -> float:
    """The multiple of the base learning rate in ``epoch`` (0-based) of ``epochs``; ``floor``: cosine's
    lr_min / lr; ``milestones``: step's fractions of the epochs."""
    if epoch < warmup:
        return (epoch + 1) / warmup
    if kind == "step":
        return 0.1 ** sum(epoch >= round(f * epochs) for f in milestones)
    if kind == "exponential":
        return gamma**epoch
    if kind == "linear":
        if epochs <= LINEAR_TAIL:
            return (epochs - epoch) / epochs
        if epochs - epoch > LINEAR_TAIL:
            return (epochs - LINEAR_TAIL - epoch) / (epochs - LINEAR_TAIL)
        return (epochs - epoch) / ((epochs - LINEAR_TAIL) * LINEAR_TAIL)
    return floor + (1 - floor) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def lr_scheduler(
    opt, kind: str, epochs: int, lr_min: float = 0.0, warmup: int = 0, gamma: float = 0.97, milestones=()
):
    """A per-epoch scheduler of ``opt``; plain cosine stays torch's ``CosineAnnealingLR`` (as runs always had)."""
    if kind not in LR_SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {kind!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"warmup_epochs must be a non-negative integer, got {warmup!r}")
    if kind == "cosine" and not warmup:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs, eta_min=lr_min)
    base = opt.param_groups[0]["lr"]
    floor = lr_min / base if base else 0.0
    if kind == "step" and not (milestones and all(0 < f <= 1 for f in milestones)):
        raise ConfigError(f"the step schedule needs lr_milestones, fractions of the epochs in (0, 1], got {milestones}")
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: lr_factor(kind, e, epochs, warmup, gamma, floor, tuple(milestones or ()))
    )
