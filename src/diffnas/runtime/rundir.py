"""A run directory: the resolved config, JSON-lines logs, TensorBoard events and the checkpoint.

Everything a report needs is written here as plain files, so reports can be made
later and for many runs at once. The checkpoint is written atomically (temp file,
fsync, rename): a run killed while saving keeps its previous checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from ..errors import DiffnasError
from . import distributed

CHECKPOINT = "checkpoint.pt"


def _jsonable(v):
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def atomic_write_bytes(path: Path, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        # a rank of a multi-process run owns one GPU: reading every GPU's state would open a context on each
        state["cuda"] = [torch.cuda.get_rng_state()] if distributed.active() else torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        if distributed.active():  # rank 0's state (of its own GPU) on this rank's GPU: the ranks stay in step
            torch.cuda.set_rng_state(state["cuda"][0])
        else:
            torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class RunDir:
    """``write=False`` (the ranks other than 0 of a multi-process run): reads work, every write is skipped."""

    def __init__(self, path, tensorboard: bool = True, write: bool = True):
        self.path = Path(path)
        self.write = write
        if write:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DiffnasError(f"{self.path}: cannot create run directory ({e.strerror})") from None
        self._tb = None
        self._tensorboard = tensorboard and write

    def file(self, name: str) -> Path:
        return self.path / name

    # -- config -------------------------------------------------------------------------------
    def write_config(self, cfg: dict, name: str = "config.yaml") -> None:
        if not self.write:
            return
        self.file(name).write_text(yaml.safe_dump(cfg, sort_keys=False))

    def read_config(self, name: str = "config.yaml") -> dict:
        path = self.file(name)
        if not path.is_file():
            raise DiffnasError(f"{path}: no config to resume from (is {self.path} a diffnas run directory?)")
        return yaml.safe_load(path.read_text())

    # -- logs -------------------------------------------------------------------------------
    def append(self, name: str, record: dict) -> None:
        if not self.write:
            return
        with open(self.file(name), "a") as f:
            f.write(json.dumps(_jsonable(record)) + "\n")

    def read_log(self, name: str) -> list[dict]:
        path = self.file(name)
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def truncate_log(self, name: str, key: str, keep_below: int) -> None:
        """On resume, drop log lines the killed run wrote after its last checkpoint."""
        path = self.file(name)
        if not self.write or not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)[key] < keep_below]
        path.write_text("".join(line + "\n" for line in kept))

    def write_json(self, name: str, data: dict) -> None:
        if not self.write:
            return
        self.file(name).write_text(json.dumps(_jsonable(data), indent=1) + "\n")

    def scalars(self, step: int, values: dict) -> None:
        if not self._tensorboard:
            return
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.file("tb")))
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self._tb.add_scalar(k, v, step)
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    # -- checkpoint ----------------------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        if not self.write:
            return
        atomic_write_bytes(self.file(CHECKPOINT), lambda f: torch.save(state, f))

    def load_checkpoint(self) -> dict | None:
        path = self.file(CHECKPOINT)
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise DiffnasError(f"{path}: unreadable checkpoint ({type(e).__name__})") from None
