"""Update schedules: when an architecture step happens.

A schedule is asked ``arch_step_due(method)`` before each weight step and told
``after_weight_step(method)`` after it (FIMT reads the weight gradients there).
Named by ``search.schedule`` as ``name`` or ``name:arg``: ``alternate`` (DARTS:
every step), ``every:K`` (K weight steps per architecture step). A new schedule is a
``Schedule`` subclass with a ``name`` in a module of this package; ``from_spec`` reads
its argument. Every schedule honours ``search.arch_start_epoch``.
"""

from __future__ import annotations

from ..errors import ConfigError, did_you_mean
from ..registry import import_submodules, named_subclasses


class Schedule:
    name = "alternate"

    def __init__(self, start_epoch: int = 0):
        self.start_epoch = start_epoch

    @classmethod
    def from_spec(cls, arg: str, start_epoch: int) -> Schedule:
        if arg:
            raise ValueError(f"'{cls.name}' takes no argument")
        return cls(start_epoch)

    def arch_step_due(self, method) -> bool:
        return method.epoch >= self.start_epoch

    def after_weight_step(self, method) -> None:
        pass

    def record(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class EveryK(Schedule):
    """Exactly K weight steps per architecture step (DARTS-PRIME's CS10 for K = 10)."""

    name = "every"

    def __init__(self, k: int, start_epoch: int = 0):
        super().__init__(start_epoch)
        if k < 1:
            raise ConfigError(f"schedule every:K needs K >= 1, got {k}")
        self.k = k
        self.count = 0

    @classmethod
    def from_spec(cls, arg: str, start_epoch: int) -> EveryK:
        return cls(int(arg), start_epoch)

    def arch_step_due(self, method) -> bool:
        if method.epoch < self.start_epoch:
            return False
        self.count += 1
        return (self.count - 1) % self.k == 0

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


import_submodules(__name__)
SCHEDULES: dict = {Schedule.name: Schedule, **named_subclasses(Schedule)}


def build_schedule(spec: str, start_epoch: int = 0) -> Schedule:
    name, _, arg = str(spec).partition(":")
    if name not in SCHEDULES:
        raise ConfigError(
            f"unknown schedule '{spec}'{did_you_mean(spec, SCHEDULES)}; choose from {', '.join(SCHEDULES)}"
        )
    try:
        return SCHEDULES[name].from_spec(arg, start_epoch)
    except ValueError as e:
        raise ConfigError(f"schedule '{spec}': bad argument '{arg}' ({e})") from None
