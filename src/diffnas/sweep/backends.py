"""Where the trials run: a pool of local processes, or Ray tasks spread over a cluster.

A backend takes the trials that are left, runs :func:`~diffnas.sweep.trials.run_trial` for each and
hands every record to ``on_done`` as it arrives. Ray is optional (``pip install 'diffnas[ray]'``).
"""

from __future__ import annotations

import concurrent.futures as cf
import os

from ..errors import DiffnasError
from .trials import failed_record, run_trial

RAY_HINT = "--backend ray needs Ray, which is not installed: pip install 'diffnas[ray]'"


def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch or no CUDA: no GPUs
        return []


def _slot_env(slot: int, gpus_per_trial: float, gpus: list[str]) -> dict:
    if gpus_per_trial <= 0 or not gpus:
        return {}
    if gpus_per_trial < 1:  # trials share a GPU
        ids = [gpus[int(slot * gpus_per_trial) % len(gpus)]]
    else:
        g = int(gpus_per_trial)
        ids = [gpus[(slot * g + j) % len(gpus)] for j in range(g)]
    return {"CUDA_VISIBLE_DEVICES": ",".join(ids)}


def run_local(spec: dict, trials: list[dict], workers: int, on_done) -> None:
    """A pool of ``workers`` threads, each running one trial process at a time."""
    import queue

    slots: queue.Queue = queue.Queue()
    for i in range(workers):
        slots.put(i)
    gpus = _gpu_ids() if spec["gpus_per_trial"] > 0 else []

    def job(trial):
        slot = slots.get()
        try:
            return run_trial(spec, trial, _slot_env(slot, spec["gpus_per_trial"], gpus))
        finally:
            slots.put(slot)

    pool = cf.ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(job, t): t for t in trials}
        for fut in cf.as_completed(futures):
            on_done(_result_or_error(fut.result, futures[fut]))
    finally:  # on Ctrl-C: start no more trials (the running ones got the SIGINT too)
        pool.shutdown(wait=True, cancel_futures=True)


def run_ray(spec: dict, trials: list[dict], workers: int | None, address: str | None, on_done) -> None:
    """One Ray task per trial (``num_cpus``, ``num_gpus``); at most ``workers`` in flight when given."""
    try:
        import ray
    except ImportError:
        raise DiffnasError(RAY_HINT) from None
    started = not ray.is_initialized()
    if started:
        kwargs = {"address": address} if address else {}
        try:
            ray.init(**kwargs, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except Exception as e:  # noqa: BLE001 - no cluster at that address, a wrong token, ...
            lines = str(e).strip().splitlines()
            raise DiffnasError(f"Ray: {lines[-1] if lines else type(e).__name__}") from None
    try:
        task = ray.remote(num_cpus=spec["cpus_per_trial"], num_gpus=spec["gpus_per_trial"], max_retries=0)(run_trial)
        waiting = list(trials)
        running: dict = {}
        while waiting or running:
            while waiting and (not workers or len(running) < workers):
                t = waiting.pop(0)
                running[task.remote(spec, t)] = t
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                t = running.pop(ref)
                on_done(_result_or_error(lambda ref=ref: ray.get(ref), t))
    except BaseException:
        for ref in running:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()


def _result_or_error(get, trial: dict) -> dict:
    try:
        return get()
    except Exception as e:  # noqa: BLE001 - the trial's runner itself broke (a lost Ray node, ...)
        msg = str(e).strip().splitlines()
        return failed_record(trial, f"{type(e).__name__}: {msg[-1] if msg else ''}")
