"""The width backbones: pre-activation bottleneck ResNets (CIFAR) and MobileNetV2, at any per-layer widths.

One class per backbone serves three roles: the full network with per-channel scores (the
search supernet's body), the full network without them, and the physically pruned network
(the same class built with fewer channels). Each network declares its prunable layers
(``widths``), which modules each layer's kept channels slice (``channel_map``: output and
input dimension) and the batch norm right before each score (``score_bn``), so ``pruned``
is written once for both backbones.

A score multiplies its channel where ``score_at`` says: ``bn`` after the batch norm and
before the activation (default), ``act`` after the activation. A score before the batch
norm is not offered: the norm divides it out, so its gradient is zero.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

SCORE_AT = ("bn", "act")


def scored(y: torch.Tensor, score, act, at: str) -> torch.Tensor:
    """act(y) with ``score`` (one value per channel, or None) applied at ``at``."""
    if score is None:
        return act(y)
    s = score.view(1, -1, 1, 1)
    return act(y * s) if at == "bn" else act(y) * s


def conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)


class WidthNetwork(nn.Module):
    """What both backbones share: scored forward, prunable layers, and the pruned copy."""

    drop_prob = 0.0  # the retraining loop sets it; these backbones have no drop path

    def __init__(self, score_at: str = "bn"):
        super().__init__()
        self.score_at = score_at
        self.backbone: dict = {}  # constructor keywords that fix the unpruned shape (written to the widths file)

    @classmethod
    def layer_widths(cls, **backbone) -> dict[str, int]:
        """{prunable layer: channels} of the unpruned backbone."""
        raise NotImplementedError

    def channel_map(self) -> dict[str, tuple]:
        """{module path: (layer slicing its output dim or None, layer slicing its input dim or None)}."""
        raise NotImplementedError

    def score_bn(self) -> dict[str, str]:
        """{prunable layer: path of the batch norm its score follows}."""
        raise NotImplementedError

    def bn_scales(self) -> dict[str, torch.Tensor]:
        """{prunable layer: the BN scale (gamma) of its channels}: what Network Slimming ranks."""
        modules = dict(self.named_modules())
        return {layer: modules[path].weight for layer, path in self.score_bn().items()}

    @torch.no_grad()
    def pruned(self, kept: dict, scores: dict | None = None) -> WidthNetwork:
        """A physically smaller copy keeping the channels ``kept`` ({layer: indices}) with these weights.

        ``scores`` ({layer: full score vector}) are folded into the batch norm before each
        score (gamma and beta times the score), so the copy computes what the scored network
        computes with the other channels' scores at zero (exactly for ``score_at=bn``).
        """
        kept = {k: torch.as_tensor(v, dtype=torch.long) for k, v in kept.items()}
        small = type(self)(**self.backbone, widths={k: len(v) for k, v in kept.items()}, score_at=self.score_at)
        small.to(next(self.parameters()).device)
        src, dst = dict(self.named_modules()), dict(small.named_modules())
        cmap = self.channel_map()
        for path, module in src.items():
            if list(module.children()):
                continue
            out_layer, in_layer = cmap.get(path, (None, None))
            mine = dict(module.named_parameters(recurse=False)) | dict(module.named_buffers(recurse=False))
            theirs = dict(dst[path].named_parameters(recurse=False)) | dict(dst[path].named_buffers(recurse=False))
            for name, t in mine.items():
                if t.ndim and out_layer is not None:
                    t = t.index_select(0, kept[out_layer].to(t.device))
                if t.ndim >= 2 and in_layer is not None:
                    t = t.index_select(1, kept[in_layer].to(t.device))
                theirs[name].copy_(t)
        if scores:
            for layer, path in small.score_bn().items():
                s = torch.as_tensor(scores[layer]).to(dst[path].weight.device)[kept[layer].to(dst[path].weight.device)]
                dst[path].weight.mul_(s)
                dst[path].bias.mul_(s)
        return small


# -- pre-activation bottleneck ResNet (He et al. 2016; Network Slimming's preresnet) -------------------------------
class Bottleneck(nn.Module):
    """bn-relu-conv1x1 (c1) | bn-relu-conv3x3 (c2) | bn-relu-conv1x1 (4 planes), plus the shortcut."""

    def __init__(self, cin: int, c1: int, c2: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv(cin, c1, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(c1), conv(c1, c2, 3, stride)
        self.bn3, self.conv3 = nn.BatchNorm2d(c2), conv(c2, cout, 1)
        self.downsample = conv(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x, s1=None, s2=None, at="bn"):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(scored(self.bn2(out), s1, F.relu, at))
        out = self.conv3(scored(self.bn3(out), s2, F.relu, at))
        return out + (x if self.downsample is None else self.downsample(x))


class PreResNet(WidthNetwork):
    """CIFAR pre-activation bottleneck ResNet of depth 9n + 2: 3 stages of n blocks, 16/32/64 planes (x4 out)."""

    def __init__(
        self,
        depth: int = 164,
        multiplier: float = 1.0,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: dict | None = None,
        score_at: str = "bn",
    ):
        super().__init__(score_at)
        self.backbone = dict(depth=depth, multiplier=multiplier, num_classes=num_classes, in_channels=in_channels)
        full = self.layer_widths(depth=depth, multiplier=multiplier)
        widths = {**full, **(widths or {})}
        n, planes = (depth - 2) // 9, self.planes(multiplier)
        self.conv1 = conv(in_channels, planes[0], 3)
        cin, stages = planes[0], []
        for s, p in enumerate(planes):
            blocks = []
            for b in range(n):
                name = f"s{s + 1}_b{b}"
                blocks.append(
                    Bottleneck(cin, widths[f"{name}_c1"], widths[f"{name}_c2"], 4 * p, 2 if b == 0 and s else 1)
                )
                cin = 4 * p
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        self.bn, self.fc = nn.BatchNorm2d(cin), nn.Linear(cin, num_classes)

    @staticmethod
    def planes(multiplier: float) -> list[int]:
        return [max(1, round(p * multiplier)) for p in (16, 32, 64)]

    @classmethod
    def layer_widths(cls, depth: int = 164, multiplier: float = 1.0, **_) -> dict[str, int]:
        n = (depth - 2) // 9
        return {
            f"s{s + 1}_b{b}_c{c}": p for s, p in enumerate(cls.planes(multiplier)) for b in range(n) for c in (1, 2)
        }

    def blocks(self):
        for s, stage in enumerate(self.stages):
            for b, block in enumerate(stage):
                yield f"s{s + 1}_b{b}", f"stages.{s}.{b}", block

    def channel_map(self) -> dict[str, tuple]:
        out = {}
        for name, path, _ in self.blocks():
            c1, c2 = f"{name}_c1", f"{name}_c2"
            out.update(
                {
                    f"{path}.conv1": (c1, None),
                    f"{path}.bn2": (c1, None),
                    f"{path}.conv2": (c2, c1),
                    f"{path}.bn3": (c2, None),
                    f"{path}.conv3": (None, c2),
                }
            )
        return out

    def score_bn(self) -> dict[str, str]:
        return {f"{name}_c{c}": f"{path}.bn{c + 1}" for name, path, _ in self.blocks() for c in (1, 2)}

    def forward(self, x, scores: dict | None = None):
        x = self.conv1(x)
        for name, _, block in self.blocks():
            s1, s2 = (None, None) if scores is None else (scores[f"{name}_c1"], scores[f"{name}_c2"])
            x = block(x, s1, s2, self.score_at)
        x = F.relu(self.bn(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# -- MobileNetV2 (Sandler et al. 2018) -------------------------------------------------------------------------------
# (expansion t, output channels c, blocks n, first stride s)
MBV2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """[conv1x1 expand-BN-ReLU6] | depthwise 3x3-BN-ReLU6 (the hidden channels, scored) | conv1x1 project-BN."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int, expand: bool):
        super().__init__()
        relu6 = nn.ReLU6(inplace=True)
        self.expand = nn.Sequential(conv(cin, hidden, 1), nn.BatchNorm2d(hidden), relu6) if expand else None
        self.dw = nn.Sequential(conv(hidden, hidden, 3, stride, groups=hidden), nn.BatchNorm2d(hidden))
        self.project = nn.Sequential(conv(hidden, cout, 1), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x, score=None, at="bn"):
        h = x if self.expand is None else self.expand(x)
        h = self.project(scored(self.dw(h), score, F.relu6, at))
        return x + h if self.residual else h


class MobileNetV2(WidthNetwork):
    """MobileNetV2; ``small_input``: stride 1 in the stem and the 24-channel stage (32x32 images)."""

    def __init__(
        self,
        multiplier: float = 1.0,
        small_input: bool = False,
        num_classes: int = 1000,
        in_channels: int = 3,
        widths: dict | None = None,
        score_at: str = "bn",
    ):
        super().__init__(score_at)
        self.backbone = dict(
            multiplier=multiplier, small_input=small_input, num_classes=num_classes, in_channels=in_channels
        )
        widths = {**self.layer_widths(multiplier=multiplier), **(widths or {})}
        ch = self.channels
        cin = ch(32, multiplier)
        self.stem = nn.Sequential(
            conv(in_channels, cin, 3, 1 if small_input else 2), nn.BatchNorm2d(cin), nn.ReLU6(True)
        )
        blocks, i = [], 0
        for t, c, n, s in MBV2_SETTINGS:
            for k in range(n):
                stride = s if k == 0 else 1
                if small_input and c == 24:
                    stride = 1
                hidden = widths.get(f"b{i}_h", cin)  # no expansion: the depthwise runs on the input, not pruned
                blocks.append(InvertedResidual(cin, hidden, ch(c, multiplier), stride, expand=t != 1))
                cin, i = ch(c, multiplier), i + 1
        self.blocks = nn.ModuleList(blocks)
        last = ch(1280, max(1.0, multiplier))
        self.head = nn.Sequential(conv(cin, last, 1), nn.BatchNorm2d(last), nn.ReLU6(True))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    @staticmethod
    def channels(c: int, multiplier: float) -> int:
        return max(1, round(c * multiplier))

    @classmethod
    def layer_widths(cls, multiplier: float = 1.0, **_) -> dict[str, int]:
        out, i, cin = {}, 0, cls.channels(32, multiplier)
        for t, c, n, _s in MBV2_SETTINGS:
            for _ in range(n):
                if t != 1:
                    out[f"b{i}_h"] = cin * t
                cin, i = cls.channels(c, multiplier), i + 1
        return out

    def prunable_blocks(self):
        for i, block in enumerate(self.blocks):
            if block.expand is not None:
                yield f"b{i}_h", f"blocks.{i}", block

    def channel_map(self) -> dict[str, tuple]:
        out = {}
        for h, path, _ in self.prunable_blocks():
            out.update(
                {
                    f"{path}.expand.0": (h, None),
                    f"{path}.expand.1": (h, None),
                    f"{path}.dw.0": (h, None),  # depthwise: one filter per channel, input dim 1
                    f"{path}.dw.1": (h, None),
                    f"{path}.project.0": (None, h),
                }
            )
        return out

    def score_bn(self) -> dict[str, str]:
        return {h: f"{path}.dw.1" for h, path, _ in self.prunable_blocks()}

    def forward(self, x, scores: dict | None = None):
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            s = None if scores is None or block.expand is None else scores[f"b{i}_h"]
            x = block(x, s, self.score_at)
        x = F.adaptive_avg_pool2d(self.head(x), 1).flatten(1)
        return self.classifier(x)


BACKBONES = {"preresnet": PreResNet, "mobilenetv2": MobileNetV2}
