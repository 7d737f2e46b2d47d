"""The NAS-Bench-201 search network (the public ``TinyNetworkDarts``), with its cells computed cheaply.

Every edge holds the benchmark's ops (non-affine BN, convs with a bias), built as the
public code builds them, so parameters, initialization and state dict are its own.
What differs is how a cell is computed, with the same outputs and gradients:

- `none` is never computed (its weighted output is zero);
- the convolutions of all edges leaving one node read the same input, so they run as one
  convolution (the 1x1 kernels as the centres of 3x3 ones) with one ReLU and one batch
  norm; a node's average pool is computed once, whichever edges read it;
- in CPU training, everything the edges leaving one node send on (conv, BN, pool and the
  weighted sums) is one autograd Function, ``_SourceNode``, with a hand-written backward:
  one autograd node per node instead of a few dozen, the ReLU recomputed, not stored.

Under batch statistics (training), the conv bias before a non-affine BN cancels exactly,
so the fused training path leaves it out (its gradient is zero either way); evaluation
with running statistics adds it. The relaxation decides the mixing
(``Mixing``: op weights, active ops, edge weights); PC-DARTS's partial channels and
DARTS-PRIME's node norms are built when the relaxation asks for them.
"""

from __future__ import annotations

import functools
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import ConfigError
from ..base import Mixing
from ..darts import fastops
from ..darts.supernet import PRECISIONS, channel_shuffle
from ..darts.supernet import Supernet as DartsSupernet
from .architecture import EDGES, NODES, node_edges
from .ops import CONV_KERNELS, ResNetBasicBlock, head, make_op, stage_plan, stem

RECOMPUTE_SHARE = 0.5  # the first cells holding this share of the activations recompute their convs in backward


class Edge(nn.Module):
    """The ops of one edge (no module for `none`), keyed by name."""

    def __init__(self, names, C: int):
        super().__init__()
        self.ops = nn.ModuleDict({n: make_op(n, C, affine=False) for n in names if n != "none"})


def _kernel3(w: torch.Tensor) -> torch.Tensor:
    k = w.shape[-1]
    return w if k == 3 else F.pad(w, (1, 1, 1, 1))


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


def _window_sums(x: torch.Tensor) -> torch.Tensor:
    """Each 3x3 window's sum (zero padding), as shifted adds: with 1/count, the average pool; its backward is
    the same sums of g/count. On CPU several times faster than ``avg_pool2d``, and it needs no kernel of its
    own (a depthwise convolution of ones, as fast, pages ~7 MB of library code in on its first call)."""
    p = F.pad(x, (1, 1, 1, 1))
    rows = p[..., :, :-2] + p[..., :, 1:-1]
    rows += p[..., :, 2:]
    sums = rows[..., :-2, :] + rows[..., 1:-1, :]
    sums += rows[..., 2:, :]
    return sums


@functools.lru_cache(maxsize=16)
def _inverse_counts_of(h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return _window_sums(torch.ones(1, 1, h, w, dtype=dtype, device=device)).reciprocal_()


def _inverse_counts(x: torch.Tensor) -> torch.Tensor:
    """1 / the number of in-image positions in each 3x3 window (one tensor per size, kept)."""
    return _inverse_counts_of(*x.shape[-2:], x.dtype, x.device)


def _dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum(u * v) in one pass: both flattened in ``u``'s memory order (views when both are laid out alike)."""
    dims = sorted(range(u.dim()), key=lambda d: -u.stride(d))
    return torch.vdot(u.permute(dims).reshape(-1), v.permute(dims).reshape(-1))


def _pooled(plan) -> bool:
    return any(kind == "avg_pool_3x3" for _, terms in plan for kind, _, _ in terms)


def _term(kind: str, slot, x, y, pool, c: int) -> torch.Tensor:
    """The tensor one term of a node's plan weighs: its input, its pool, or one slot of its conv outputs."""
    if kind == "skip_connect":
        return x
    if kind == "avg_pool_3x3":
        return pool
    return y[:, slot * c : (slot + 1) * c]


def _mix(plan, a, x, y, pool, c: int) -> list[torch.Tensor]:
    """Per edge of ``plan``: the sum over its terms (op name, conv slot, op index) of weight times tensor.

    Under no_grad (inside ``_SourceNode``) the weights are read once as numbers: scaled adds in place."""
    outs, grad = [], torch.is_grad_enabled()
    numbers = None if grad else a.tolist()
    for e, terms in plan:
        row = a[e] if grad else numbers[e]
        out = None
        for kind, slot, o in terms:
            t = _term(kind, slot, x, y, pool, c)
            if out is None:
                out = t * row[o]
            else:
                out = out + t * row[o] if grad else out.add_(t, alpha=row[o])
        outs.append(out)
    return outs


class _SourceNode(torch.autograd.Function):
    """What the edges leaving one node send to the nodes they enter, as one autograd node (CPU training).

    ``plan``: per edge, (edge, its terms (op name, conv slot, op index)); ``a``: the op weights [E, O];
    ``w``: every conv of these edges as one 3x3 kernel. Forward: ReLU, the one conv, the
    non-affine BN (batch statistics, running statistics updated), the pool, the weighted sums.
    Saved: the input, the pool, and unless ``recompute``, the BN output (which is also the BN's
    x-hat) and its 1/std; with ``recompute`` backward runs conv and BN again from the input (the
    same bits: same call, same input), so a node keeps two tensors instead of one per conv and
    edge. The ReLU is always recomputed. All conv terms' weight gradients are one
    product and reduction; the BN's backward also gives the conv terms' alpha gradients.
    """

    @staticmethod
    def forward(ctx, x, w, a, stats, plan, c, recompute):
        y = invstd = None
        if w is not None:
            y, invstd = _SourceNode.conv_bn(F.relu(x), w, stats.eps, stats)
        pool = _window_sums(x).mul_(_inverse_counts(x)) if _pooled(plan) else None
        outs = _mix(plan, a, x, y, pool, c)
        ctx.plan, ctx.c, ctx.eps = plan, c, stats.eps if stats is not None else None
        ctx.weight_node, ctx.alpha_node = getattr(w, "grad_fn", None), getattr(a, "grad_fn", None)
        ctx.recompute = recompute
        # (recomputing: the pool is kept, it is small and cheap to keep, not to recompute)
        ctx.save_for_backward(x, w, a, *(() if recompute else (y, invstd)), *(() if pool is None else (pool,)))
        return tuple(outs)

    @staticmethod
    def conv_bn(r, w, eps, stats=None):
        """The one conv of the ReLU'd input ``r``, the non-affine BN on batch statistics: (x-hat, 1/std);
        ``stats``' running statistics updated when given. The same call on the same input gives the same
        bits, so backward can recompute it instead of keeping the node's conv outputs."""
        b = F.conv2d(r, w, None, 1, 1)
        mean, var, momentum = (
            (None, None, 0.0) if stats is None else (stats.running_mean, stats.running_var, stats.momentum)
        )
        y, _, invstd = torch.ops.aten.native_batch_norm(b, None, None, mean, var, True, momentum, eps)
        return y, invstd

    @staticmethod
    def backward(ctx, *grads):
        x, w, a, *kept = ctx.saved_tensors
        plan, c = ctx.plan, ctx.c
        if torch.is_grad_enabled():  # create_graph: differentiate the plain ops so higher orders are exact
            return _SourceNode.plain_backward(ctx, grads, x, w, a)
        r = F.relu(x) if w is not None else None
        if ctx.recompute:
            y, invstd = _SourceNode.conv_bn(r, w, ctx.eps) if w is not None else (None, None)
        else:
            y, invstd, *kept = kept
        pool = kept[0] if _pooled(plan) else None
        gx = gpool = gy = None
        convs, found, at = [], [], []  # (slot, edge, op) per conv slot; alpha gradients of the other terms, where
        if y is not None:
            gy = torch.empty_like(y)  # each slot's edge gradient
        numbers = a.tolist()
        # (a weight step asks for no alpha gradient)
        want_a = ctx.needs_input_grad[2] and fastops._will_run(ctx.alpha_node)
        for (e, terms), g in zip(plan, grads):
            row = numbers[e]
            for kind, slot, o in terms:
                if kind == "skip_connect":
                    if want_a:
                        found.append(_dot(g, x))
                        at.append((e, o))
                    gx = g * row[o] if gx is None else gx.add_(g, alpha=row[o])
                elif kind == "avg_pool_3x3":
                    if want_a:
                        found.append(_dot(g, pool))
                        at.append((e, o))
                    gpool = g * row[o] if gpool is None else gpool.add_(g, alpha=row[o])
                else:
                    gy[:, slot * c : (slot + 1) * c] = g
                    convs.append((slot, e, o))
        ga = torch.zeros_like(a) if want_a else None
        if found:
            ga[[e for e, _ in at], [o for _, o in at]] = torch.stack(found)
        if gpool is not None:  # the pool's backward: the same window sums, of g / count
            gp = _window_sums(gpool.mul_(_inverse_counts(x)))
            gx = gp if gx is None else gx.add_(gp)
        gw = None
        if y is not None:
            # the BN's input gradient, each slot's weight folded into the BN's per-channel factor, and as the
            # "weight gradient" sum(gy * y) per channel: each conv term's alpha gradient, in the same kernel
            convs.sort()
            es, os_ = [e for _, e, _ in convs], [o for _, _, o in convs]
            scaled = invstd * a[es, os_].repeat_interleave(c)
            if want_a:
                gb, g_scale = fastops.bn_input_grad(gy, y, scaled, scale_grad=True)
                ga[es, os_] = g_scale.view(len(convs), c).sum(1)
            else:
                gb = fastops.bn_input_grad(gy, y, scaled)
            del gy, y
            want_w = ctx.needs_input_grad[1] and fastops._will_run(ctx.weight_node)
            gr, gw, _ = torch.ops.aten.convolution_backward(
                gb, r, w, None, (1, 1), (1, 1), (1, 1), False, (0, 0), 1, (True, want_w, False)
            )
            gr = torch.ops.aten.threshold_backward(gr, x, 0)
            gx = gr if gx is None else gx.add_(gr)
        return gx, gw, ga, None, None, None, None

    @staticmethod
    def plain_backward(ctx, grads, x, w, a):
        # views: their gradients are the direct ones (a also reaches these outputs through x, via earlier nodes)
        x, w, a = (None if t is None else t.view_as(t) for t in (x, w, a))
        y = None
        if w is not None:  # batch statistics, no running-statistics update (done once, in forward)
            y = F.batch_norm(F.conv2d(F.relu(x), w, None, 1, 1), None, None, training=True, eps=ctx.eps)
        outs = _mix(ctx.plan, a, x, y, _pool(x) if _pooled(ctx.plan) else None, ctx.c)
        inputs = [(i, t) for i, t in enumerate((x, w, a)) if ctx.needs_input_grad[i]]
        found = torch.autograd.grad(outs, [t for _, t in inputs], grads, create_graph=True, allow_unused=True)
        result = [None] * 7
        for (i, _), g in zip(inputs, found):
            result[i] = g
        return tuple(result)


class SearchCell(nn.Module):
    def __init__(self, C: int, index: int, relax):
        super().__init__()
        names = relax.space.ops["normal"]
        self.index, self.cell_type, self.names = index, "normal", names
        self.recompute = False  # (the supernet decides: its largest cells)
        self._plans: dict = {}
        self.k = relax.partial_channels
        if C % self.k:
            raise ConfigError(f"channels {C} not divisible by partial_channels {self.k}")
        self.c_ops = C // self.k
        self.edges = nn.ModuleList(Edge(names, self.c_ops) for _ in EDGES)
        self.node_norms = (
            nn.ModuleList(nn.BatchNorm2d(C, affine=False) for _ in range(NODES - 1)) if relax.node_norm else None
        )

    def bn_stats(self, bns):
        """The running statistics of the BNs ``bns`` as one BN's (nn.BatchNorm's update factor for this step)."""
        bn0 = bns[0]
        tracked = bn0.track_running_stats
        # (momentum None: the cumulative average)
        momentum = bn0.momentum if bn0.momentum is not None else 1.0 / float(bn0.num_batches_tracked + 1)
        return types.SimpleNamespace(
            running_mean=torch.cat([b.running_mean for b in bns]) if tracked else None,
            running_var=torch.cat([b.running_var for b in bns]) if tracked else None,
            momentum=momentum,
            eps=bn0.eps,
            num_batches_tracked=torch.zeros((), dtype=torch.long),
            training=bn0.training,
            affine=False,
            track_running_stats=tracked,
        )

    def plan(self, j: int, active) -> tuple:
        """For the edges leaving node j under ``active``: (plan, the conv modules, their BNs); the plan per
        edge, [(op name, conv slot, op index)]. Kept per (node, active ops): a search asks the same often."""
        key = (j, tuple(map(tuple, active)))
        if key not in self._plans:
            plan, pairs = {}, []  # pairs: (edge, conv name) per slot
            for e, (_, src) in enumerate(EDGES):
                if src != j:
                    continue
                for o in active[e]:
                    name = self.names[o]
                    if name == "none":
                        continue
                    if name in CONV_KERNELS:
                        pairs.append((e, name))
                    plan.setdefault(e, []).append((name, len(pairs) - 1 if name in CONV_KERNELS else None, o))
            ops = [self.edges[e].ops[n].op for e, n in pairs]
            self._plans[key] = (list(plan.items()), [op[1] for op in ops], [op[2] for op in ops])
        return self._plans[key]

    def read(self, x: torch.Tensor, j: int, weights: torch.Tensor, active) -> dict:
        """{edge: its output} for the edges leaving node j (input ``x``): their convs as one convolution
        (1x1 kernels as 3x3 centres) with one ReLU and one BN, one pool, the weighted sums."""
        plan, convs, bns = self.plan(j, active)
        if not plan:
            return {}
        w = bias = stats = None
        if convs:
            w = torch.cat([_kernel3(conv.weight) for conv in convs])
            bias = torch.cat([conv.bias for conv in convs])
            stats = self.bn_stats(bns)
        plain_bn = types.SimpleNamespace(training=self.training, affine=False, track_running_stats=True)
        if fastops.usable(x, stats or plain_bn):
            outs = _SourceNode.apply(x, w, weights, stats, plan, self.c_ops, self.recompute)
            if stats is not None:
                with torch.no_grad():  # the batch mean with the bias, as the plain op's running mean has it
                    stats.running_mean.add_(bias, alpha=stats.momentum)
        else:
            y = None
            if convs:
                b = F.conv2d(F.relu(x), w, bias, padding=1)
                batch_stats = stats.training or not stats.track_running_stats
                y = F.batch_norm(
                    b, stats.running_mean, stats.running_var, None, None, batch_stats, stats.momentum, stats.eps
                )
            outs = _mix(plan, weights, x, y, _pool(x) if _pooled(plan) else None, self.c_ops)
        if stats is not None and stats.track_running_stats and stats.training:  # each op's BN gets its update
            with torch.no_grad():
                c = self.c_ops
                torch._foreach_copy_([b.running_mean for b in bns], stats.running_mean.split(c))
                torch._foreach_copy_([b.running_var for b in bns], stats.running_var.split(c))
                torch._foreach_add_([b.num_batches_tracked for b in bns], 1)
        return dict(zip([e for e, _ in plan], outs))

    def forward(self, x: torch.Tensor, mix: Mixing) -> torch.Tensor:
        k, c = self.k, self.c_ops
        weights = mix.weights if mix.edge_weights is None else mix.weights * mix.edge_weights[:, None]
        states, sent = [x], {}  # sent[edge]: that edge's output
        for i in range(1, NODES):
            s = states[i - 1][:, :c] if k > 1 else states[i - 1]
            sent.update(self.read(s, i - 1, weights, mix.active))
            terms = [sent[e] for e in node_edges(i) if e in sent]
            total = terms[0] if terms else s.new_zeros(s.shape)  # no op runs into this node: it is zero
            for t in terms[1:]:
                total = total + t
            if k > 1:  # PC-DARTS: the bypassed channels, weighted by each edge's weight, then the shuffle
                bypass = None
                for e in node_edges(i):
                    b = states[EDGES[e][1]][:, c:]
                    if mix.edge_weights is not None:
                        b = mix.edge_weights[e] * b
                    bypass = b if bypass is None else bypass + b
                total = channel_shuffle(torch.cat([total, bypass], dim=1), k)
            if self.node_norms is not None:
                total = self.node_norms[i - 1](total)
            states.append(total)
        return states[-1]


class Supernet(DartsSupernet):
    """Stem, 3 stages of N search cells with ResNet reduction blocks between them, BN-ReLU, pool, linear.

    Shares the DARTS supernet's precision handling, parameter split and forward (autocast,
    channels-last); builds its own layers.
    """

    def __init__(self, relax, C: int, N: int, num_classes: int, in_channels: int = 3, precision: str = "auto"):
        nn.Module.__init__(self)
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.relax, self.precision, self._autocast_off = relax, precision, 0
        self._recompute = 0  # (the DARTS supernet's recomputation context is a no-op here: activations kept)
        self.stem = stem(in_channels, C)
        layers, cells = [], []
        c_prev = C
        for c, reduction in stage_plan(C, N):
            if reduction:
                layers.append(ResNetBasicBlock(c_prev, c))
            else:
                cells.append(SearchCell(c, len(cells), relax))
                layers.append(cells[-1])
            c_prev = c
        self.layers = nn.ModuleList(layers)
        self.cells = cells  # (registered through layers)
        self.lastact, self.classifier = head(c_prev, num_classes)
        self.cell_sizes = [cell.c_ops * cell.k / 4**stage for stage in range(3) for cell in cells[stage * N :][:N]]
        # recomputed in backward: the first cells, holding half of the activations (DARTS-CD's context swaps this)
        self.worth_recomputing = self._worth_recomputing(RECOMPUTE_SHARE)
        for cell, worth in zip(cells, self.worth_recomputing):
            cell.recompute = worth
        relax.cells_built(self.cell_keys())

    def _forward(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x, self.relax.mixing("normal", layer.index)) if isinstance(layer, SearchCell) else layer(x)
        return self.classifier(F.adaptive_avg_pool2d(self.lastact(x), 1).flatten(1))

    def edge_parameters(self) -> dict:
        return {(cell.index, e): list(edge.parameters()) for cell in self.cells for e, edge in enumerate(cell.edges)}

    def shared_parameters(self) -> dict:
        """The weights of no edge, by what they feed: {"classifier": the head, cell index: the stem (first cell)
        or the reduction block right before that cell}."""
        shared = {"classifier": [*self.lastact.parameters(), *self.classifier.parameters()]}
        before = list(self.stem.parameters())
        for layer in self.layers:
            if isinstance(layer, SearchCell):
                shared[layer.index], before = before, []
            else:
                before = list(layer.parameters())
        return shared

    def edge_shapes(self, input_shape) -> list:
        raise NotImplementedError("the nb201 space has no latency table (it does not provide edge-shapes)")
