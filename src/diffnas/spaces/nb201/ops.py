"""The NAS-Bench-201 operations and blocks, as the public NAS-Bench-201 code defines them.

``affine=False`` (the search cells) gives a non-affine BN and a conv *with* a bias;
``affine=True`` (the benchmark's networks) an affine BN and a conv without one. The
average pool has no BN (unlike DARTS's); inside cells every op keeps channels and
resolution, so `skip_connect` is the identity and no pool needs a preprocessing conv.
"""

from __future__ import annotations

import torch.nn as nn

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
CONV_KERNELS = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


class ReLUConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, affine: bool, track_running_stats=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, bias=not affine),
            nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track_running_stats),
        )

    def forward(self, x):
        return self.op(x)


class Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


def make_op(name: str, C: int, affine: bool, track_running_stats: bool = True) -> nn.Module:
    """One op of a cell edge (stride 1, C channels in and out)."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    if name in CONV_KERNELS:
        return ReLUConvBN(C, C, CONV_KERNELS[name], 1, affine, track_running_stats)
    raise ValueError(f"unknown NAS-Bench-201 op {name!r}")


class ResNetBasicBlock(nn.Module):
    """The reduction between stages: two ReLUConvBN 3x3 (the first stride 2) + AvgPool-Conv1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, affine=True)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, affine=True)
        # ceil_mode: an odd size halves as the strided conv does (even sizes, the benchmark's, are unchanged)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2, ceil_mode=True), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def stem(in_channels: int, C: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))


def head(C: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """BN-ReLU before the global pool, and the classifier."""
    return nn.Sequential(nn.BatchNorm2d(C), nn.ReLU(inplace=False)), nn.Linear(C, num_classes)


def stage_plan(C: int, N: int) -> list[tuple[int, bool]]:
    """(channels, is the ResNet reduction block) per layer: N cells at C, block, N at 2C, block, N at 4C."""
    return [(C, False)] * N + [(2 * C, True)] + [(2 * C, False)] * N + [(4 * C, True)] + [(4 * C, False)] * N
