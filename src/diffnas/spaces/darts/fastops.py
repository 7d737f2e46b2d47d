"""Training-time kernels of the search supernet's ops, cheaper in time and memory than autograd's.

The supernet runs every candidate op on every edge, so the cost of a search step is the
cost of a few op types, repeated. Two things make that cheap here:

- ``dil_conv_bn``: ReLU -> depthwise conv -> 1x1 conv -> non-affine BN (DARTS's DilConv,
  and each half of its SepConv) as one autograd function. It keeps only its input and its
  output (the output is also what the BN backward needs: without affine, BN's output is
  x-hat) and recomputes the ReLU and the depthwise conv in the backward pass instead of
  storing them; autograd would keep four tensors per block. The input gradient of a
  stride-1 depthwise conv is computed as a forward depthwise conv with the flipped kernel,
  which is several times faster on CPU than the generic convolution backward.
- ``shared_inputs()``: while it is open, a parameter-free op (max/avg pool) followed by a
  non-affine BN is computed once per input tensor and reused by every edge that reads the
  same state; each edge's own BN still gets the same running-statistics update it would
  have got by computing the op itself (the batch statistics are the same).

Both paths give the same outputs, gradients and BN running statistics as the plain modules
(tests/test_bench.py checks this against autograd on the plain modules).
"""

from __future__ import annotations

import contextlib
import threading

import torch
import torch.nn.functional as F

_state = threading.local()
ENABLED = True  # tests switch this off to compare with the plain modules


@contextlib.contextmanager
def shared_inputs():
    """Within this block, pool+BN outputs are shared between edges reading the same tensor."""
    prev = getattr(_state, "cache", None)
    _state.cache = {}
    try:
        yield
    finally:
        _state.cache = prev


def shared_cache():
    return getattr(_state, "cache", None) if ENABLED else None


def tensor_key(x: torch.Tensor, *extra) -> tuple:
    return (x.data_ptr(), tuple(x.shape), x.stride(), x.dtype, x.device, x._version, *extra)


def bn_momentum(bn) -> float:
    """The factor nn.BatchNorm uses for this update (counting the batch, as it does)."""
    bn.num_batches_tracked.add_(1)
    return 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum


@torch.no_grad()
def update_running_stats(bn, mean: torch.Tensor, var_unbiased: torch.Tensor) -> None:
    m = bn_momentum(bn)
    bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), m)
    bn.running_var.lerp_(var_unbiased.to(bn.running_var.dtype), m)


def shareable(bn) -> bool:
    """A training BN with batch statistics gives the same output to every edge reading one tensor."""
    return ENABLED and bn.training and not bn.affine and bn.track_running_stats


def usable(x: torch.Tensor, bn) -> bool:
    """The fast kernels serve CPU training with non-affine, tracking BN (the DARTS supernet)."""
    return (
        ENABLED
        and bn.training
        and not bn.affine
        and bn.track_running_stats
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
    )


def bn_input_grad(gy: torch.Tensor, y: torch.Tensor, invstd: torch.Tensor, scale_grad: bool = False):
    """Input gradient of a non-affine, batch-statistics BN from its output: y is x-hat, so
    d/db = invstd * (gy - mean(gy) - y * mean(gy * y)), in one fused kernel (the native BN
    backward with x-hat = y as its input, mean 0, invstd 1, weight = invstd).

    ``invstd`` may carry a per-channel factor s (the BN output was then used as s * y: the
    gradient is that of the scaled output); ``scale_grad``: also return sum(gy * y) per
    channel, the gradient of such a factor, from the same kernel."""
    zeros, ones = torch.zeros_like(invstd), torch.ones_like(invstd)
    gb, g_scale, _ = torch.ops.aten.native_batch_norm_backward(
        gy, y, invstd, None, None, zeros, ones, True, 0.0, (True, scale_grad, False)
    )
    return (gb, g_scale) if scale_grad else gb


class _ReluConvBN(torch.autograd.Function):
    """y = BN(conv2(conv1(relu(x)))), conv2 (a 1x1 conv) optional, BN without affine, batch statistics."""

    @staticmethod
    def forward(ctx, x, w1, w2, bn, stride, padding, dilation, groups):
        b = F.conv2d(F.relu(x), w1, None, stride, padding, dilation, groups)
        if w2 is not None:
            b = F.conv2d(b, w2)
        m = bn_momentum(bn)
        y, _, invstd = torch.ops.aten.native_batch_norm(b, None, None, bn.running_mean, bn.running_var, True, m, bn.eps)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.bn_eps = bn.eps
        ctx.save_for_backward(x, w1, w2, y, invstd)
        # the weights come in as views (see _needed): their nodes tell whether this backward wants them
        ctx.weight_nodes = (getattr(w1, "grad_fn", None), getattr(w2, "grad_fn", None))
        return y

    @staticmethod
    def backward(ctx, gy):
        x, w1, w2, y, invstd = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        if torch.is_grad_enabled():  # create_graph: differentiate the plain ops so higher orders are exact
            return _plain_backward(ctx, gy, x, w1, w2, ctx.bn_eps)
        ga = bn_input_grad(gy, y, invstd)
        want_x = ctx.needs_input_grad[0]
        want_w1, want_w2 = (ctx.needs_input_grad[i] and _will_run(ctx.weight_nodes[i - 1]) for i in (1, 2))
        want_w2 = want_w2 and w2 is not None
        # recomputed, not stored; only weight gradients need them (an architecture step needs neither)
        r = F.relu(x) if want_w1 or want_w2 else None
        g2 = None
        if want_w2:
            a = F.conv2d(r, w1, None, stride, padding, dilation, groups)
            ga, g2, _ = torch.ops.aten.convolution_backward(
                ga, a, w2, None, (1, 1), (0, 0), (1, 1), False, (0, 0), 1, (True, True, False)
            )
            del a
        elif w2 is not None:
            ga = F.conv2d(ga, w2.transpose(0, 1))  # input gradient of a 1x1 conv
        k = w1.shape[-1]
        depthwise = groups == x.shape[1] == w1.shape[0] and w1.shape[1] == 1
        same = depthwise and k > 1 and w1.shape[-2] == k and padding == dilation * (k - 1) // 2
        if same and stride == 2 and tuple(ga.shape[-2:]) == tuple(-(-n // 2) for n in x.shape[-2:]):
            # a stride-2 conv's gradients = the stride-1 conv's, with the output gradient spread onto the
            # even positions (zeros between): avoids PyTorch's slow strided depthwise backward on CPU
            up = torch.zeros_like(x, dtype=ga.dtype)
            up[:, :, ::2, ::2] = ga
            ga, stride = up, 1
        # (the input only gives its shape when no weight gradient is wanted)
        args = (ga, x if r is None else r, w1, None, (stride,) * 2, (padding,) * 2, (dilation,) * 2, False, (0, 0))
        args = (*args, groups)
        if same and stride == 1:
            # stride-1 transposed depthwise conv = depthwise conv with the flipped kernel (fast on CPU)
            gr = F.conv2d(ga, w1.flip((2, 3)), None, 1, padding, dilation, groups) if want_x else None
            if not want_w1:
                g1 = None
            elif k == 3 and dilation == 1:  # PyTorch's own is fast for this one
                g1 = torch.ops.aten.convolution_backward(*args, (False, True, False))[1]
            else:
                g1 = _depthwise_weight_grad(r, ga, k, padding, dilation)
        elif want_x or want_w1:
            gr, g1, _ = torch.ops.aten.convolution_backward(*args, (want_x, want_w1, False))
        else:
            gr, g1 = None, None
        gx = torch.ops.aten.threshold_backward(gr, x, 0) if want_x else None  # relu'(x): x > 0 where r > 0
        return gx, g1, g2, None, None, None, None, None


def _depthwise_weight_grad(r, g, k: int, padding: int, dilation: int) -> torch.Tensor:
    """Weight gradient of a stride-1 depthwise conv as one forward conv: every (sample, channel)
    plane of the padded input correlated with its output-gradient plane (taps ``dilation`` apart),
    summed over the batch. On CPU this is 1.5-10x faster than PyTorch's backward for 5x5 and
    dilated kernels."""
    n, c, h, w = r.shape
    rp = F.pad(r, (padding,) * 4).contiguous().view(1, n * c, h + 2 * padding, w + 2 * padding)
    out = F.conv2d(rp, g.contiguous().view(n * c, 1, g.shape[-2], g.shape[-1]), None, dilation, 0, 1, n * c)
    return out.view(n, c, k, k).sum(0).unsqueeze(1)


def _as_view(w):
    """A view of a weight that needs a gradient: its node shows whether a backward pass will use it."""
    return w.view_as(w) if w is not None and w.requires_grad and torch.is_grad_enabled() else w


def _will_run(node) -> bool:
    """False when the running backward does not need this weight's gradient (an architecture step's
    ``autograd.grad(loss, alphas)``): the depthwise weight gradient is the dearest part of the step."""
    return node is None or torch._C._will_engine_execute_node(node)


def _plain_backward(ctx, gy, x, w1, w2, eps):
    stride, padding, dilation, groups = ctx.conf
    b = F.conv2d(F.relu(x), w1, None, stride, padding, dilation, groups)
    if w2 is not None:
        b = F.conv2d(b, w2)
    y = F.batch_norm(b, None, None, training=True, eps=eps)  # running stats: updated once, in forward
    inputs = [(i, t) for i, t in enumerate((x, w1, w2)) if ctx.needs_input_grad[i] and t.requires_grad]
    grads = [None] * 8
    if inputs:
        found = torch.autograd.grad(y, [t for _, t in inputs], gy, create_graph=True)
        for (i, _), g in zip(inputs, found):
            grads[i] = g
    return tuple(grads)


def dil_conv_bn(x, dw, pw, bn) -> torch.Tensor:
    """The fast DilConv: ``dw``/``pw`` are the depthwise and 1x1 ``nn.Conv2d``, ``bn`` the BN module."""
    w1, w2 = _as_view(dw.weight), _as_view(pw.weight)
    return _ReluConvBN.apply(x, w1, w2, bn, dw.stride[0], dw.padding[0], dw.dilation[0], dw.groups)


def relu_conv_bn(x, conv, bn) -> torch.Tensor:
    """The fast ReLUConvBN (the cells' input preprocessing, NASP's conv ops): one square conv, then BN."""
    w = _as_view(conv.weight)
    return _ReluConvBN.apply(x, w, None, bn, conv.stride[0], conv.padding[0], conv.dilation[0], conv.groups)
