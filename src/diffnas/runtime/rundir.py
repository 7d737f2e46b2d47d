"""A run directory: the resolved config, JSON-lines logs, TensorBoard events and the checkpoint.

Everything a report needs is written here as plain files, so reports can be made
later and for many runs at once. Whole files (checkpoint, config, summaries, truncated
logs) are written atomically (temp file, fsync, rename): a run killed while saving keeps
the previous version. Logs are appended a line at a time; a line cut short by a kill is
skipped by the readers and dropped on resume. The checkpoint holds only tensors and plain
data and is read with ``weights_only=True``, so resuming a run directory from elsewhere
cannot run code. One process writes a run directory at a time (``RunDir.lock``).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from ..errors import DiffnasError
from . import distributed

try:
    import fcntl
except ImportError:  # Windows: no locking
    fcntl = None

CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"
LOG_TXT = "log.txt"  # the run's console lines (sizes, estimates, one line per epoch), appended across resumes


class RunDirBusy(DiffnasError):
    """Another live process writes the run directory."""


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


def append_line(path: Path, line: str, check_end: bool = True) -> None:
    """Append one line; a torn last line (a killed writer's) is ended first so it cannot swallow this one.

    ``check_end=False``: the caller knows the file ends with a complete line (no read)."""
    with open(path, "a+b") as f:
        if check_end and f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write((line + "\n").encode())


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file; a last line that does not parse (cut short by a kill) is skipped."""
    lines = [(i, line) for i, line in enumerate(Path(path).read_text().splitlines(), 1) if line.strip()]
    records = []
    for i, line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            if i != lines[-1][0]:
                raise DiffnasError(f"{path}, line {i}: not a JSON record") from None
    return records


def rng_state() -> dict:
    """Every RNG's state as tensors, numbers and lists (what a ``weights_only`` load accepts)."""
    version, internal, gauss = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached],
    }
    if torch.cuda.is_available():
        # a rank of a multi-process run owns one GPU: reading every GPU's state would open a context on each
        state["cuda"] = [torch.cuda.get_rng_state()] if distributed.active() else torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        if distributed.active():  # rank 0's state (of its own GPU) on this rank's GPU: the ranks stay in step
            torch.cuda.set_rng_state(state["cuda"][0])
        else:
            torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _holder(text: str) -> str:
    """Who a lock file names, for the messages."""
    try:
        d = json.loads(text)
        return f"pid {d['pid']} on {d['host']}"
    except (ValueError, TypeError, KeyError):
        return "an unknown process"


class RunDir:
    """``write=False`` (the ranks other than 0 of a multi-process run): reads work, every write is skipped.

    A writer calls ``lock()`` first (it creates the directory) and ``close()`` at the end.
    """

    def __init__(self, path, tensorboard: bool = True, write: bool = True):
        self.path = Path(path)
        self.write = write
        self._tb = None
        self._tensorboard = tensorboard and write
        self._lock_fd: int | None = None
        self._ended: set[str] = set()  # logs whose end this writer has checked for a torn line

    def file(self, name: str) -> Path:
        return self.path / name

    # -- one writer ---------------------------------------------------------------------------
    def lock(self, create: bool = True) -> None:
        """Become the directory's only writer, or raise ``RunDirBusy`` naming the live holder.

        An exclusive ``flock`` on ``.lock`` (holding pid and host): the kernel drops it when
        the holder dies, so a lock file left by a killed run is simply taken over (with a
        notice). Temp files of a write the killed run did not finish are removed here.
        ``create=False`` (resuming): a missing directory is an error, not created.
        """
        if not self.write or self._lock_fd is not None:
            return
        if not create and not self.path.is_dir():
            raise DiffnasError(f"{self.path}: no such run directory to resume")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DiffnasError(f"{self.path}: cannot create run directory ({e.strerror})") from None
        path = self.file(LOCK)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy() from None
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # the holder removed the file between our open and lock: take the new one
        old = os.read(fd, 4096).decode(errors="replace").strip()
        if old:
            print(f"diffnas: taking over {self.path} from {_holder(old)}, which is not running", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        self._lock_fd = fd
        for tmp in self.path.glob(".*.tmp"):  # left by a kill inside atomic_write_bytes
            tmp.unlink(missing_ok=True)

    def _busy(self) -> RunDirBusy:
        path = self.file(LOCK)
        holder = _holder(path.read_text(errors="replace")) if path.is_file() else "another process"
        return RunDirBusy(f"{self.path} is in use by {holder} (one run directory, one run)")

    def check_free(self) -> None:
        """Raise ``RunDirBusy`` as ``lock`` would when a live process writes here; takes and changes nothing."""
        path = self.file(LOCK)
        if fcntl is None or not path.is_file():
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._busy() from None
        finally:
            os.close(fd)  # and with it the probe's lock

    def unlock(self) -> None:
        if self._lock_fd is not None:
            self.file(LOCK).unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- config -------------------------------------------------------------------------------
    def write_config(self, cfg: dict, name: str = "config.yaml") -> None:
        if not self.write:
            return
        atomic_write_bytes(self.file(name), lambda f: f.write(yaml.safe_dump(cfg, sort_keys=False).encode()))

    def read_config(self, name: str = "config.yaml") -> dict:
        path = self.file(name)
        if not self.path.is_dir():
            raise DiffnasError(f"{self.path}: no such run directory")
        if not path.is_file():
            raise DiffnasError(f"{path}: no config to resume from (is {self.path} a diffnas run directory?)")
        return yaml.safe_load(path.read_text())

    # -- logs -------------------------------------------------------------------------------
    def append(self, name: str, record: dict) -> None:
        """Append one record; only the first append of this writer looks for a torn last line (after
        that, the file ends with this writer's own complete lines: no read per step)."""
        if not self.write:
            return
        append_line(self.file(name), json.dumps(_jsonable(record)), check_end=name not in self._ended)
        self._ended.add(name)

    def say(self, line: str, warning: bool = False) -> None:
        """A line for the user: printed (above any progress bar) and appended to ``log.txt``, which a
        resumed run continues. Only the writer (rank 0) says anything."""
        if not self.write:
            return
        from tqdm import tqdm

        tqdm.write(f"diffnas: warning: {line}" if warning else line, file=sys.stderr if warning else sys.stdout)
        if self.path.is_dir():
            text = ("warning: " if warning else "") + line
            append_line(self.file(LOG_TXT), text, check_end=LOG_TXT not in self._ended)
            self._ended.add(LOG_TXT)

    def read_log(self, name: str) -> list[dict]:
        path = self.file(name)
        return read_jsonl(path) if path.is_file() else []

    def truncate_log(self, name: str, key: str, keep_below: int) -> None:
        """On resume, drop log lines the killed run wrote after its last checkpoint (a torn last one too)."""
        path = self.file(name)
        if not self.write or not path.is_file():
            return
        kept = "".join(json.dumps(r) + "\n" for r in read_jsonl(path) if r[key] < keep_below)
        atomic_write_bytes(path, lambda f: f.write(kept.encode()))

    def write_json(self, name: str, data: dict) -> None:
        if not self.write:
            return
        text = json.dumps(_jsonable(data), indent=1) + "\n"
        atomic_write_bytes(self.file(name), lambda f: f.write(text.encode()))

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
        """Flush TensorBoard and let other processes write here again."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        self.unlock()

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
            # weights_only: tensors and plain data; anything else (code to run) is refused, never built
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise DiffnasError(
                f"{path}: refused to load, the checkpoint holds objects other than tensors and plain data"
            ) from None
        except Exception as e:
            raise DiffnasError(f"{path}: unreadable checkpoint ({type(e).__name__})") from None
