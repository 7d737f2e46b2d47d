"""Width search spaces (RARTS section IV-B): one architecture score per channel of a backbone's prunable layers.

The architecture parameters are not op matrices but one score vector per prunable layer
(``arch_shapes``); the ``channel-scores`` relaxation allocates them and the supernet
multiplies every channel by its score. The rule (``derive``) prunes the channels of
smallest |score|: a fixed global ratio (``width.prune: ratio``, the percentile over all
layers, as Network Slimming) or every score at or below ``width.threshold``
(``width.prune: threshold``, with the ``l1`` regularizer: an unfixed ratio). A layer
always keeps its best channel. The result is a widths file (``WidthArchitecture``);
``build_network`` makes the physically smaller network, fresh or inheriting the searched
weights of the kept channels (``train.inherit``: the search's run directory).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn as nn

from ...errors import ConfigError, GenotypeError
from ..base import RelaxedNetwork, SearchSpace
from .architecture import WidthArchitecture
from .networks import SCORE_AT, MobileNetV2, PreResNet

DATASETS = ("cifar10", "cifar100", "imagefolder", "fashion-mnist", "mnist")

# Network Slimming's fine-tuning (and RARTS's "settings of Network Slimming"): SGD, lr 0.1 divided by 10 at
# 50% and 75% of 160 epochs, weight decay 1e-4, batch 64
TRAIN = {
    "epochs": 160,
    "batch_size": 64,
    "lr": 0.1,
    "lr_min": 0.0,
    "lr_schedule": "step",
    "lr_milestones": [0.5, 0.75],  # fractions of the epochs where the learning rate drops 10x
    "momentum": 0.9,
    "nesterov": False,
    "wd": 1e-4,
    "grad_clip": 0.0,
    "cutout": 0,
    "crop_padding": None,
    "drop_path": 0.0,
    "auxiliary": 0.0,
    "inherit": None,  # a search run directory: start from its supernet's weights of the kept channels
}
# the search at Network Slimming's scale (its sparsity training: 160 epochs, lr 0.1, wd 1e-4, batch 64); the
# scores by Adam as DARTS's alphas, without weight decay (the l1 regularizer is the sparsity term)
SEARCH = {
    "relaxation": "channel-scores",
    "epochs": 160,
    "batch_size": 64,
    "w_lr": 0.1,
    "w_lr_min": 0.0,
    "w_wd": 1e-4,
    "grad_clip": 0.0,
    "a_lr": 3e-4,
    "a_wd": 0.0,
    "hessian_every": 0,
}
WIDTH = {"score_at": "bn", "prune": "ratio", "ratio": 0.4, "threshold": 0.01}
PRUNE = ("ratio", "threshold")


def prune(scores: dict, rule: str, ratio: float, threshold: float) -> dict:
    """{layer: scores} -> {layer: kept indices}: drop the smallest |score| globally (``ratio`` of all channels, ties
    by order) or every |score| <= ``threshold``; each layer keeps at least its largest."""
    names = list(scores)
    flat = torch.cat([torch.as_tensor(scores[k], dtype=torch.float32).abs().flatten().cpu() for k in names])
    drop = torch.zeros(len(flat), dtype=torch.bool)
    if rule == "ratio":
        order = torch.argsort(flat, stable=True)
        drop[order[: int(round(ratio * len(flat)))]] = True
    else:
        drop = flat <= threshold
    kept, start = {}, 0
    for k in names:
        n = torch.as_tensor(scores[k]).numel()
        keep = torch.nonzero(~drop[start : start + n]).flatten().tolist()
        kept[k] = keep or [int(torch.argmax(flat[start : start + n]))]
        start += n
    return kept


class WidthSupernet(RelaxedNetwork, nn.Module):
    """The full backbone with every prunable channel times its score (the relaxation's parameters)."""

    def __init__(self, relax, body: nn.Module):
        super().__init__()
        self.relax, self.body = relax, body

    def scores(self) -> dict:
        return {k: self.relax.weights(k) for k in self.relax.cell_types}

    def bn_scales(self) -> dict:
        return self.body.bn_scales()

    def forward(self, x):
        return self.body(x, self.scores())


class WidthSpace(SearchSpace):
    """Base of the width spaces: a backbone class and its unpruned shape (``backbone_defaults``)."""

    network: type = PreResNet
    backbone_defaults: dict = {}
    datasets = DATASETS
    provides = frozenset({"channel-scores", "random-architectures"})
    architecture = WidthArchitecture
    cell_types: tuple = ()  # no op edges: the parameters are per-channel scores (``arch_shapes``)
    ops: dict = {}
    method_defaults = {"*": {"search": SEARCH}}
    presets = {
        "quick": {"subset": 4000, "search": {"epochs": 3}, "train": {"epochs": 6}},
        "tiny": {
            "subset": 400,
            "image_size": 12,
            "search": {"epochs": 2, "batch_size": 32},
            "train": {"epochs": 1, "batch_size": 32},
        },
    }

    def __init__(self, backbone: dict | None = None, score_at="bn", prune="ratio", ratio=0.4, threshold=0.01):
        if score_at not in SCORE_AT:
            raise ConfigError(f"width.score_at must be one of {', '.join(SCORE_AT)}, got {score_at!r}")
        if prune not in PRUNE:
            raise ConfigError(f"width.prune must be one of {', '.join(PRUNE)}, got {prune!r}")
        if not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
            raise ConfigError(f"width.ratio must be a fraction in [0, 1), got {ratio!r}")
        if not isinstance(threshold, (int, float)) or threshold < 0:
            raise ConfigError(f"width.threshold must be a number >= 0, got {threshold!r}")
        self.backbone = self.check_backbone({**self.backbone_defaults, **(backbone or {})}, ConfigError, "width")
        self.score_at, self.rule, self.ratio, self.threshold = score_at, prune, float(ratio), float(threshold)
        self.original = self.network.layer_widths(**self.backbone)

    @classmethod
    def from_config(cls, cfg):
        w = dict(cfg.get("width") or {})
        backbone = {k: w.pop(k) for k in list(w) if k in cls.backbone_defaults}
        return cls(backbone, **w)

    @classmethod
    def check_backbone(cls, backbone: dict, error=GenotypeError, where="backbone") -> dict:
        unknown = set(backbone) - set(cls.backbone_defaults)
        if unknown:
            raise error(f"{where}: unknown key(s) {', '.join(sorted(unknown))} for {cls.name}")
        m = backbone.get("multiplier")
        if not isinstance(m, (int, float)) or isinstance(m, bool) or m <= 0:
            raise error(f"{where}.multiplier must be a number > 0, got {m!r}")
        return backbone

    def __repr__(self):
        return f"{type(self).__name__}({self.backbone}, score_at={self.score_at!r}, prune={self.rule!r})"

    # -- what the relaxation allocates ----------------------------------------------------------
    def arch_shapes(self) -> dict:
        return {k: (c,) for k, c in self.original.items()}

    # -- search ---------------------------------------------------------------------------------
    def build_supernet(self, relax, cfg, in_channels: int, num_classes: int):
        body = self.network(**self.backbone, num_classes=num_classes, in_channels=in_channels, score_at=self.score_at)
        return WidthSupernet(relax, body)

    def make(self, kept: dict) -> WidthArchitecture:
        return WidthArchitecture(self.name, dict(self.backbone), kept, dict(self.original))

    def derive(self, weights: dict, generator=None) -> WidthArchitecture:
        """The pruning rule on {layer: scores} (any ranking: searched scores, |BN gamma|, random numbers)."""
        return self.make(prune(weights, self.rule, self.ratio, self.threshold))

    def random_architecture(self, rng: random.Random) -> WidthArchitecture:
        """Random pruning: every channel equally likely to go, ``width.ratio`` of them (global), from ``rng``."""
        scores = {k: torch.tensor([rng.random() for _ in range(c)]) for k, c in self.original.items()}
        return self.make(prune(scores, "ratio", self.ratio, 0.0))

    def to_masks(self, architecture: WidthArchitecture) -> dict:
        """{layer: 0/1 per channel}: the architecture as scores of the supernet."""
        out = {}
        for k, c in self.original.items():
            m = torch.zeros(c)
            m[architecture.kept[k]] = 1.0
            out[k] = m
        return out

    def parse(self, d: dict, source: str = "widths") -> WidthArchitecture:
        return self.architecture.from_dict(d, source)

    # -- retraining -----------------------------------------------------------------------------
    def build_network(self, architecture: WidthArchitecture, cfg, in_channels: int, num_classes: int):
        kw = dict(**architecture.backbone, num_classes=num_classes, in_channels=in_channels, score_at=self.score_at)
        source = cfg.train.get("inherit")
        if not source:
            return self.network(**kw, widths={k: len(v) for k, v in architecture.kept.items()})
        full = self.network(**kw)
        state = searched_state(source)
        body = {k[len("body.") :]: v for k, v in state.items() if k.startswith("body.")}
        scores = {k[len("relax.alphas.") :]: v for k, v in state.items() if k.startswith("relax.alphas.")}
        try:
            full.load_state_dict(body)
        except RuntimeError as e:
            raise ConfigError(
                f"train.inherit: {source}: its supernet is not this backbone ({str(e).splitlines()[0]})"
            ) from None
        return full.pruned(architecture.kept, scores)


def searched_state(source) -> dict:
    """The supernet's state dict in a search run directory's checkpoint (loaded with weights_only)."""
    path = Path(source)
    path = path / "checkpoint.pt" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"train.inherit: {path}: no such checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["job"]["method"]["net"]
    except Exception as e:
        raise ConfigError(f"train.inherit: {path}: not a search checkpoint ({type(e).__name__})") from None


class ResNetWidth(WidthSpace):
    network = PreResNet
    backbone_defaults = {"depth": 164, "multiplier": 1.0}

    @classmethod
    def check_backbone(cls, backbone, error=GenotypeError, where="backbone"):
        backbone = super().check_backbone(backbone, error, where)
        d = backbone.get("depth")
        if not isinstance(d, int) or isinstance(d, bool) or d < 11 or (d - 2) % 9:
            raise error(f"{where}.depth must be 9n + 2 (n >= 1: 20, 56, 164, ...), got {d!r}")
        return backbone


class ResNet164Width(ResNetWidth):
    name = "resnet164-width"
    help = "RARTS width search: a score per channel of pre-activation bottleneck ResNet-164 (CIFAR, 1.7 M params)"
    backbone_defaults = {"depth": 164, "multiplier": 1.0}
    defaults = {"train": TRAIN, "width": {**backbone_defaults, **WIDTH}}


class ResNet56Width(ResNet164Width):
    name = "resnet56-width"
    help = "width search on the same family at depth 56 (6 bottlenecks per stage; a CIFAR proxy)"
    backbone_defaults = {"depth": 56, "multiplier": 1.0}
    defaults = {"train": TRAIN, "width": {**backbone_defaults, **WIDTH}}


class ResNet20Width(ResNet164Width):
    name = "resnet20-width"
    help = "width search on the same family at depth 20 (2 bottlenecks per stage; the smallest proxy)"
    backbone_defaults = {"depth": 20, "multiplier": 1.0}
    defaults = {"train": TRAIN, "width": {**backbone_defaults, **WIDTH}}


class MobileNetV2Width(WidthSpace):
    name = "mobilenetv2-width"
    help = "RARTS width search: a score per hidden (expanded) channel of MobileNetV2's inverted residuals"
    network = MobileNetV2
    backbone_defaults = {"multiplier": 1.0, "small_input": False}
    defaults = {"train": TRAIN, "width": {**backbone_defaults, **WIDTH}}

    @classmethod
    def check_backbone(cls, backbone, error=GenotypeError, where="backbone"):
        backbone = super().check_backbone(backbone, error, where)
        if not isinstance(backbone.get("small_input"), bool):
            raise error(f"{where}.small_input must be true or false, got {backbone.get('small_input')!r}")
        return backbone


def original_widths(d: dict, source: str) -> dict:
    """{layer: channels} of the unpruned backbone a widths file names (its space and ``backbone``)."""
    from .. import SPACES

    cls = SPACES.get(d.get("space"))
    if cls is None or not issubclass(cls, WidthSpace):
        widths = sorted(n for n, c in SPACES.items() if issubclass(c, WidthSpace))
        raise GenotypeError(f"{source}: space {d.get('space')!r} is not a width space ({', '.join(widths)})")
    backbone = d.get("backbone")
    if not isinstance(backbone, dict):
        raise GenotypeError(f"{source}: a widths file needs a 'backbone' object")
    backbone = cls.check_backbone({**cls.backbone_defaults, **backbone}, GenotypeError, f"{source}: backbone")
    return cls.network.layer_widths(**backbone)
