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


def _channel_mean(t: torch.Tensor) -> torch.Tensor:
    return t.mean((0, 2, 3), keepdim=True)


class _DilConvBN(torch.autograd.Function):
    """y = BN(conv1x1(dwconv(relu(x)))), BN without affine, batch statistics."""

    @staticmethod
    def forward(ctx, x, w_dw, w_pw, bn, stride, padding, dilation):
        groups = w_dw.shape[0]
        a = F.conv2d(F.relu(x), w_dw, None, stride, padding, dilation, groups)
        b = F.conv2d(a, w_pw)
        del a
        m = bn_momentum(bn)
        y, _, invstd = torch.ops.aten.native_batch_norm(b, None, None, bn.running_mean, bn.running_var, True, m, bn.eps)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.bn_eps = bn.eps
        ctx.save_for_backward(x, w_dw, w_pw, y, invstd)
        return y

    @staticmethod
    def backward(ctx, gy):
        x, w_dw, w_pw, y, invstd = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        if torch.is_grad_enabled():  # create_graph: differentiate the plain ops so higher orders are exact
            return _plain_backward(ctx, gy, x, w_dw, w_pw, ctx.bn_eps)
        # BN without affine: y is x-hat, so d/db = invstd * (gy - mean(gy) - y * mean(gy * y))
        gb = (gy - _channel_mean(gy) - y * _channel_mean(gy * y)) * invstd.view(1, -1, 1, 1)
        # recompute what the forward did not keep
        r = F.relu(x)
        a = F.conv2d(r, w_dw, None, stride, padding, dilation, groups)
        ga, g_pw, _ = torch.ops.aten.convolution_backward(
            gb, a, w_pw, None, (1, 1), (0, 0), (1, 1), False, (0, 0), 1, (True, ctx.needs_input_grad[2], False)
        )
        del a
        k = w_dw.shape[-1]
        same = stride == 1 and w_dw.shape[-2] == k and padding == dilation * (k - 1) // 2
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        conv_args = (
            ga,
            r,
            w_dw,
            None,
            (stride, stride),
            (padding, padding),
            (dilation, dilation),
            False,
            (0, 0),
            groups,
        )
        if same:
            # transposed depthwise conv at stride 1 = depthwise conv with the flipped kernel
            gr = F.conv2d(ga, w_dw.flip((2, 3)), None, 1, padding, dilation, groups) if want_x else None
            g_dw = torch.ops.aten.convolution_backward(*conv_args, (False, True, False))[1] if want_w else None
        else:
            gr, g_dw, _ = torch.ops.aten.convolution_backward(*conv_args, (want_x, want_w, False))
        gx = torch.ops.aten.threshold_backward(gr, r, 0) if want_x else None
        return gx, g_dw, g_pw, None, None, None, None


def _plain_backward(ctx, gy, x, w_dw, w_pw, eps):
    stride, padding, dilation, groups = ctx.conf
    a = F.conv2d(F.relu(x), w_dw, None, stride, padding, dilation, groups)
    y = F.batch_norm(F.conv2d(a, w_pw), None, None, training=True, eps=eps)  # running stats: updated once, in forward
    inputs = [(i, t) for i, t in enumerate((x, w_dw, w_pw)) if ctx.needs_input_grad[i] and t.requires_grad]
    grads = [None] * 7
    if inputs:
        found = torch.autograd.grad(y, [t for _, t in inputs], gy, create_graph=True)
        for (i, _), g in zip(inputs, found):
            grads[i] = g
    return tuple(grads)


def dil_conv_bn(x, dw, pw, bn) -> torch.Tensor:
    """The fast DilConv: ``dw``/``pw`` are the depthwise and 1x1 ``nn.Conv2d``, ``bn`` the BN module."""
    return _DilConvBN.apply(x, dw.weight, pw.weight, bn, dw.stride[0], dw.padding[0], dw.dilation[0])
