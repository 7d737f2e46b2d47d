"""Candidate operations of the CNN cell spaces, one constructor per name.

Every constructor takes ``(C, stride, affine)`` and returns a module mapping
``[N, C, H, W]`` to ``[N, C, H / stride, W / stride]``. The same constructors build
the search supernet (``affine=False``, as in DARTS) and the derived network.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import fastops


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in, c_out, kernel, stride, padding, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x):
        conv = self[1]
        square = len(set(conv.stride)) == len(set(conv.padding)) == len(set(conv.dilation)) == 1
        if square and fastops.usable(x, self[2]):  # supernet training on CPU: recompute instead of store
            return fastops.relu_conv_bn(x, conv, self[2])
        return super().forward(x)


class DilConv(nn.Sequential):
    """ReLU, depthwise k x k (dilated), pointwise 1x1, BN."""

    def __init__(self, c_in, c_out, kernel, stride, padding, dilation, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x):
        if fastops.usable(x, self[3]):  # supernet training on CPU: recompute instead of store
            return fastops.dil_conv_bn(x, self[1], self[2], self[3])
        return super().forward(x)


class SepConv(nn.Sequential):
    """Two stacked DilConv blocks with dilation 1 (the DARTS separable conv)."""

    def __init__(self, c_in, c_out, kernel, stride, padding, affine=True):
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )


class Conv1xKKx1(nn.Sequential):
    """ReLU, 1 x k then k x 1 conv, BN (NASP's conv_3x1_1x3)."""

    def __init__(self, C, k, stride, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, k), (1, stride), (0, k // 2), bias=False),
            nn.Conv2d(C, C, (k, 1), (stride, 1), (k // 2, 0), bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )


class Zero(nn.Module):
    """The `none` op. Supernets never call it (its output is zero); kept for completeness."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halves the resolution with two offset 1x1 stride-2 convs, concatenated."""

    def __init__(self, c_in, c_out, affine=True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {c_out}")
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x):
        x = F.relu(x)
        # pad odd sizes so both branches agree in shape
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def _pool(kind: str, k: int):
    def make(C, stride, affine):
        pool = (
            nn.MaxPool2d(k, stride, k // 2)
            if kind == "max"
            else nn.AvgPool2d(k, stride, k // 2, count_include_pad=False)
        )
        # DARTS follows search-time pooling with a non-affine BN to match conv scales
        return pool if affine else PoolBN(pool, nn.BatchNorm2d(C, affine=False))

    return make


class PoolBN(nn.Sequential):
    """Search-time pooling + non-affine BN. Within ``fastops.shared_inputs()`` the output is
    computed once per input tensor and shared by every edge that reads it (each edge's BN
    still gets its running-statistics update)."""

    def forward(self, x):
        cache = fastops.shared_cache()
        if cache is None or not fastops.shareable(self[1]):
            return super().forward(x)
        pool = self[0]
        key = fastops.tensor_key(x, type(pool), pool.kernel_size, pool.stride, pool.padding)
        hit = cache.get(key)
        if hit is None:
            p, bn = pool(x), self[1]
            if p.device.type != "cpu":  # (mixed precision on GPU: the module's own BN)
                y = bn(p)
                with torch.no_grad():
                    var, mean = torch.var_mean(p.detach().float(), (0, 2, 3), correction=1)
            else:
                y, mean, invstd = torch.ops.aten.native_batch_norm(
                    p, None, None, bn.running_mean, bn.running_var, True, fastops.bn_momentum(bn), bn.eps
                )
                with torch.no_grad():  # the batch variance, unbiased as in the running-statistics update
                    n = p.numel() // p.shape[1]
                    var = (invstd.detach().double().pow(-2) - bn.eps) * (n / max(n - 1, 1))
            cache[key] = (x, y, mean.detach(), var)  # x is held so its memory is not reused while the cache lives
            return y
        fastops.update_running_stats(self[1], hit[2], hit[3])
        return hit[1]


def _skip(C, stride, affine):
    return nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine)


OPS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "none": lambda C, stride, affine: Zero(stride),
    "max_pool_3x3": _pool("max", 3),
    "max_pool_5x5": _pool("max", 5),
    "max_pool_7x7": _pool("max", 7),
    "avg_pool_3x3": _pool("avg", 3),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine),
    "sep_conv_7x7": lambda C, stride, affine: SepConv(C, C, 7, stride, 3, affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine),
    "conv_1x1": lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine),
    "conv_3x3": lambda C, stride, affine: ReLUConvBN(C, C, 3, stride, 1, affine),
    "conv_3x1_1x3": lambda C, stride, affine: Conv1xKKx1(C, 3, stride, affine),
}
