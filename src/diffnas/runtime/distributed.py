"""Multi-process data parallelism under ``torchrun``: one process per device, gradients averaged.

``torchrun --nproc_per_node N -m diffnas search ...`` starts N copies of the command with
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in their environment. ``setup`` (called where
the engine resolves its device) sees them, joins the process group once (NCCL on CUDA, each
process on ``cuda:LOCAL_RANK``; Gloo on the CPU) and from then on:

- every rank draws the same global batch (``search.batch_size`` / ``train.batch_size`` is
  the *global* batch, the same seed and shuffling on every rank, augmented in full on every
  rank so the torch RNG stays in step) and keeps its own contiguous ``1/N`` of it (``shard``);
- every gradient is averaged over the ranks before it reaches an optimizer
  (``average_gradients``, called by ``methods.base.set_grads``, which every method's weight,
  architecture and RARTS y updates install their gradients through; DARTS's second order
  also averages its virtual-step and Hessian-vector inputs with it). Equal shards make the
  mean of the ranks' mean losses the global batch's mean loss, so the averaged gradient is
  the single-process gradient of the global batch (BatchNorm statistics aside, which are per
  shard, as in any data-parallel BN);
- all ranks start from the same seed, so they hold bitwise-identical weights and alphas and
  stay so: every update is the same function of the same averaged gradient. Whatever is
  computed from a gradient (the clip norm, DARTS-PRIME's Fisher trace that triggers FIMT
  architecture steps, IDARTS's dG/dbeta) is computed from the averaged one, so it is the
  same on every rank. Sampling (DARTS-CD's edges, NASP's tie-breaks, drop path) draws from
  the run's seed or the shared RNG stream, also the same everywhere;
- numbers from data (step losses and accuracies, the evaluation) are reduced, so the logs
  show the global batch and the full evaluation set; BatchNorm running statistics are
  averaged before every evaluation and checkpoint;
- only rank 0 writes the run directory and shows progress bars; after each checkpoint the
  ranks wait for each other, and a resume makes every rank load rank 0's checkpoint.

Why not ``DistributedDataParallel``: the methods take their gradients with
``torch.autograd.grad`` on chosen parameter lists (a weight step, an architecture step, a
virtual step, finite-difference Hessian-vector products, RARTS's two networks), which DDP's
backward hooks never see; a method that runs only some ops (DARTS-CD, NASP, CRB pruning)
would also need ``find_unused_parameters``. Averaging the gradient lists where they are
installed is one all-reduce per update (one flat buffer), works for every method and every
future one that uses ``set_grads``, and costs nothing in a single process: without
``WORLD_SIZE`` > 1 no process group exists and every helper here returns its input.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist

from ..errors import ConfigError

_device: torch.device | None = None  # the reduction device once the group is up


def launched() -> bool:
    """True under torchrun (or any launcher setting the env) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return _device is not None and dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0, or a single process: the one that writes files and prints."""
    if active():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0 if launched() else True


def parse_device(name: str) -> torch.device:
    """The device ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) on this machine; a name torch does not know,
    or a GPU this PyTorch cannot see, is one line here (the API checks before a run directory is written)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name}: this PyTorch sees no CUDA GPU (a CPU-only build, or no driver); use cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def setup(device_name: str) -> torch.device:
    """The device of this process; under torchrun also joins the process group (once).

    ``auto`` picks CUDA when present. Under torchrun a CUDA device (``auto``, ``cuda`` or
    ``cuda:N``) becomes ``cuda:LOCAL_RANK`` with NCCL; ``cpu`` uses Gloo.
    """
    global _device
    device = parse_device(device_name)
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"multi-process runs support cpu and cuda devices, not '{device_name}'")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_teardown)
    elif _device is not None and _device.type != device.type:
        raise ConfigError(f"this process group runs on {_device.type}; cannot switch to {device.type}")
    _device = device
    return device


def _teardown() -> None:
    global _device
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _device = None


def barrier() -> None:
    if not active():
        return
    if _device.type == "cuda":
        dist.barrier(device_ids=[_device.index])
    else:
        dist.barrier()


def check_batch_size(batch_size: int, key: str) -> None:
    """Every rank gets an equal shard of the global batch: it must divide by the number of processes."""
    n = world_size()
    if n > 1 and (batch_size < n or batch_size % n):
        raise ConfigError(f"{key} = {batch_size} is the global batch: it must be a multiple of the {n} processes")


def shard(n: int) -> slice:
    """This rank's contiguous part of a global batch of ``n`` samples (equal parts; a remainder is dropped)."""
    size = world_size()
    if size == 1:
        return slice(0, n)
    per = n // size
    if per == 0:
        raise ConfigError(f"a batch of {n} samples cannot be split over {size} processes")
    r = rank()
    return slice(r * per, (r + 1) * per)


def shard_range(n: int) -> slice:
    """This rank's contiguous part of ``n`` evaluation samples (sizes differ by at most one; all kept)."""
    size, r = world_size(), rank()
    return slice(n * r // size, n * (r + 1) // size)


def all_reduce_mean(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The mean over the ranks of each tensor (new tensors, on their own devices), in one all-reduce."""
    tensors = list(tensors)
    if not active() or not tensors:
        return tensors
    flat = torch.cat([t.detach().reshape(-1).to(_device, torch.float64) for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    out, i = [], 0
    for t in tensors:
        out.append(flat[i : i + t.numel()].reshape(t.shape).to(t.device, t.dtype))
        i += t.numel()
    return out


def average_gradients(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> list:
    """Gradients averaged over the ranks, in one all-reduce of a flat buffer; ``None`` stays ``None``.

    Which parameters have a gradient is the same on every rank (it follows from the shared
    weights, alphas and seeds); should a rank lack one, it counts as zero there.
    """
    grads = list(grads)
    if not active():
        return grads
    params = list(params)
    dtype = next((g.dtype for g in grads if g is not None), torch.float32)
    parts = [
        (torch.zeros(p.shape, device=_device, dtype=dtype) if g is None else g.detach().to(_device, dtype)).reshape(-1)
        for p, g in zip(params, grads)
    ]
    present = torch.tensor([g is not None for g in grads], device=_device, dtype=dtype)
    flat = torch.cat(parts + [present])
    dist.all_reduce(flat)
    flat /= world_size()
    anywhere = (flat[-len(grads) :] > 0).tolist()
    out, i = [], 0
    for p, has in zip(params, anywhere):
        n = p.numel()
        out.append(flat[i : i + n].view(p.shape).to(p.device) if has else None)
        i += n
    return out


def mean_values(record: dict, keys: Sequence[str]) -> dict:
    """``record`` with the float values under ``keys`` averaged over the ranks (the others untouched)."""
    if not active():
        return record
    present = [k for k in keys if isinstance(record.get(k), (int, float)) and not isinstance(record.get(k), bool)]
    if not present:
        return record
    (values,) = all_reduce_mean([torch.tensor([float(record[k]) for k in present], dtype=torch.float64)])
    return {**record, **{k: float(v) for k, v in zip(present, values.tolist())}}


def sum_values(values: Sequence[float]) -> list[float]:
    """Per position, the sum over the ranks (e.g. evaluation counts)."""
    if not active():
        return list(values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device)
    dist.all_reduce(t)
    return t.tolist()


def average_buffers(*modules: torch.nn.Module) -> None:
    """Average BatchNorm running statistics over the ranks, in place, so evaluation and checkpoints agree."""
    if not active():
        return
    seen, bufs = set(), []
    for m in modules:
        if m is None:
            continue
        for name, b in m.named_buffers():
            stat = name.rsplit(".", 1)[-1] in ("running_mean", "running_var")
            if stat and id(b) not in seen and b.is_floating_point():
                seen.add(id(b))
                bufs.append(b)
    with torch.no_grad():
        for b, mean in zip(bufs, all_reduce_mean(bufs)):
            b.copy_(mean)
