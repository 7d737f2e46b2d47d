"""Collapse monitors: cheap figures of a search's health, and the rules that turn them into warnings.

DARTS is known to collapse into cells of parameter-free ops (skip connections, pools) while its
validation loss still falls; Zela et al. (ICLR 2020, "Understanding and Robustifying DARTS")
showed that the dominant eigenvalue of the validation loss's Hessian with respect to the
architecture weights grows before that happens. The search engine calls the figures once per
epoch and logs them in metrics.jsonl (``param_free_<cell>``, ``alpha_entropy_<cell>``,
``hessian_eigenvalue``); ``collapse_warnings`` reads such a history (a run's metrics, live or
read back by the report) and says which signs appeared, with the figure and the threshold.

Thresholds (module constants, one place):
- ``PARAM_FREE_FRACTION`` = 0.5: half or more of a derived cell's edges carry parameter-free ops
  (the DARTS normal cell has 8 edges: 4 or more). DARTS+ (Liang et al. 2019) stops a search at 2 skip
  connections and P-DARTS caps them at 2; collapsed DARTS cells have 4 to 8, so half the cell is
  a sign of collapse rather than of a cell that merely uses some skips.
- ``EIGEN_WINDOW`` = 5, ``EIGEN_RATIO`` = 0.75: Zela et al.'s early-stopping rule (DARTS-ES):
  with the eigenvalue averaged over a window of k = 5 epochs, warn when the mean k epochs ago
  divided by the mean now falls below T = 0.75 (the eigenvalue grew by a third).
"""

from __future__ import annotations

import math

import torch

PARAM_FREE_WORDS = ("skip", "pool", "identity", "none", "zero")  # op names without parameters contain one
PARAM_FREE_FRACTION = 0.5
EIGEN_WINDOW = 5
EIGEN_RATIO = 0.75
FIGURES = ("param_free_", "alpha_entropy_", "hessian_eigenvalue")  # the metrics.jsonl keys written here


def is_param_free(op: str) -> bool:
    return any(word in op for word in PARAM_FREE_WORDS)


def param_free_counts(cell_ops: dict) -> dict:
    """{cell type: [chosen op per edge]} -> {cell type: number of parameter-free ops}."""
    return {cell: sum(is_param_free(op) for op in ops) for cell, ops in cell_ops.items()}


def alpha_entropy(weights: dict) -> dict:
    """{cell type: [E, O] weights} -> {cell type: mean edge entropy / log O}: 1 = uniform, 0 = one op per edge.

    Rows that are not distributions (alphas of a proximal or coordinate relaxation) go through a softmax.
    """
    out = {}
    for cell, w in weights.items():
        w = torch.as_tensor(w, dtype=torch.float64)
        if w.ndim != 2 or w.shape[1] < 2:
            continue
        sums = w.sum(1, keepdim=True)
        p = w / sums if bool((w >= 0).all() and (sums > 0).all()) else torch.softmax(w, 1)
        h = -(p * torch.log(p.clamp_min(1e-12))).sum(1)
        out[cell] = float(h.mean() / math.log(w.shape[1]))
    return out


def dominant_eigenvalue(loss_fn, params: list, iters: int = 10, tol: float = 1e-4, seed: int = 0) -> float:
    """The eigenvalue of largest magnitude of the Hessian of ``loss_fn()`` w.r.t. ``params``, by power
    iteration with Hessian-vector products (double backward); the Hessian is never formed."""
    params = [p for p in params if p.requires_grad]
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    pairs = [(p, g) for p, g in zip(params, grads) if g is not None and g.requires_grad]
    if not pairs:
        return 0.0
    params, grads = [p for p, _ in pairs], [g for _, g in pairs]
    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in params]
    value = 0.0
    for i in range(iters):
        norm = torch.sqrt(sum((x * x).sum() for x in v))
        v = [x / norm for x in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=i + 1 < iters, allow_unused=True)
        hv = [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(params, hv)]
        new = float(sum((a * b).sum() for a, b in zip(v, hv)))  # Rayleigh quotient v^T H v, |v| = 1
        done = abs(new - value) <= tol * max(abs(new), 1e-12)
        value, v = new, hv
        if done:
            break
    return value


def epoch_figures(architecture_ops: dict, weights: dict) -> dict:
    """The cheap per-epoch monitors as flat metrics.jsonl keys."""
    figures = {f"param_free_{c}": n for c, n in param_free_counts(architecture_ops).items()}
    figures.update({f"alpha_entropy_{c}": h for c, h in alpha_entropy(weights).items()})
    return figures


def collapse_warnings(history: list[dict], cell_edges: dict) -> dict:
    """{figure: one line} per sign of collapse at the last epoch of ``history`` (metrics.jsonl records,
    oldest first), naming the epoch, the figure and the threshold. ``cell_edges``: {cell type: edges of a
    derived cell} (the lengths of ``Architecture.cell_ops()``'s lists)."""
    signs: dict = {}
    if not history:
        return signs
    last = history[-1]
    epoch = last.get("epoch", len(history) - 1)
    for cell, edges in cell_edges.items():
        count = last.get(f"param_free_{cell}")
        if isinstance(count, (int, float)) and edges and count >= PARAM_FREE_FRACTION * edges:
            signs[f"param_free_{cell}"] = (
                f"collapse: epoch {epoch}: {count} of {edges} edges of the {cell} cell are parameter-free ops "
                f"(skip, pool; threshold {PARAM_FREE_FRACTION:g} of the edges)"
            )
    eig = [(r.get("epoch", i), r["hessian_eigenvalue"]) for i, r in enumerate(history) if _finite(r)]
    if eig and eig[-1][0] == epoch:
        now = _window_mean(eig, epoch)
        before = _window_mean(eig, epoch - EIGEN_WINDOW)
        if before is not None and now > 0 and before / now < EIGEN_RATIO:
            signs["hessian_eigenvalue"] = (
                f"collapse: epoch {epoch}: the dominant Hessian eigenvalue grew from {before:.4g} to {now:.4g} "
                f"({EIGEN_WINDOW}-epoch means; ratio {before / now:.2f} < {EIGEN_RATIO:g}, Zela et al. 2020)"
            )
    return signs


def _finite(record: dict) -> bool:
    v = record.get("hessian_eigenvalue")
    return isinstance(v, (int, float)) and math.isfinite(v)


def _window_mean(points: list, end: int) -> float | None:
    """Mean of the values of epochs in (end - EIGEN_WINDOW, end]; None when there are none."""
    values = [v for e, v in points if end - EIGEN_WINDOW < e <= end]
    return sum(values) / len(values) if values else None
