"""The NAS-Bench-201 space plug-in (``--space nb201``).

One searched cell type (``normal``: every cell of the network shares it; the reductions
are fixed ResNet blocks), 6 edges x 5 ops. ``search.channels`` is C and ``search.layers``
N, the cells per stage (``train.*`` the same for the retraining network).

The rule (the public code's): each edge takes the argmax of its weights over all 5 ops,
`none` included (a `none` edge is cut); ``nb201.exclude_none`` takes the best other op.
The same rule as a binary mask is the projection proximity, ADMM and NASP use (one op
per edge; there is no edges-per-node rule here).
"""

from __future__ import annotations

import random

import torch

from ...config import PRESETS, deep_merge
from ...errors import ConfigError
from ..base import SearchSpace
from .architecture import EDGES, NODES, Nb201Architecture, best_ops, node_edges
from .ops import NB201_OPS, make_op

DATASETS = ("cifar10", "cifar10-valid", "cifar100", "imagenet16-120", "imagefolder", "fashion-mnist", "mnist")

# the benchmark's 200-epoch training of every cell (NAS-Bench-201's CIFAR.config / ImageNet-16.config, 200E)
NB201_TRAIN = {
    "epochs": 200,
    "batch_size": 256,
    "channels": 16,
    "layers": 5,  # N: cells per stage
    "lr": 0.1,
    "lr_min": 0.0,
    "momentum": 0.9,
    "nesterov": True,
    "wd": 5e-4,
    "grad_clip": 0.0,
    "cutout": 0,
    "crop_padding": None,  # None: image_size // 8 (4 on CIFAR's 32, 2 on ImageNet16's 16), as the benchmark
    "drop_path": 0.0,
    "auxiliary": 0.0,
}

# NAS-Bench-201's DARTS search (DARTS-V1/V2 scripts, configs/nas-benchmark/algos/DARTS.config)
NB201_SEARCH = {
    "epochs": 50,
    "batch_size": 64,
    "channels": 16,
    "layers": 5,
    "w_lr": 0.025,
    "w_lr_min": 0.001,
    "w_momentum": 0.9,
    "w_nesterov": True,
    "w_wd": 5e-4,
    "grad_clip": 5.0,
    "a_lr": 3e-4,
    "a_betas": [0.5, 0.999],
    "a_wd": 1e-3,
}


class Nb201Space(SearchSpace):
    name = "nb201"
    help = "NAS-Bench-201 / NATS-Bench topology cell: 5 ops incl. none, 4 nodes, 6 edges, 15,625 cells"
    datasets = DATASETS
    provides = frozenset(
        {"op-edges", "node-inputs", "partial-channels", "node-norm", "op-params", "projection", "random-architectures"}
    )
    architecture = Nb201Architecture
    cell_types = ("normal",)
    defaults = {"train": NB201_TRAIN, "search": NB201_SEARCH, "nb201": {"exclude_none": False}}
    # on this space, over each method's paper defaults: the space's scale for every method ("*"), and
    # the settings a paper gives for this space (RARTS on NATS-Bench: 100 epochs, the same rates)
    method_defaults = {
        "*": {"search": {"channels": 16, "layers": 5}},
        "rarts": {"search": {"epochs": 100}},
    }
    # the shared presets with N (cells per stage) for this skeleton: 3N + 2 cells
    presets = {
        "quick": deep_merge(PRESETS["quick"], {"search": {"layers": 1}, "train": {"layers": 2}}),
        "tiny": deep_merge(PRESETS["tiny"], {"search": {"layers": 1}, "train": {"layers": 1}}),
    }

    nodes = NODES - 1  # the nodes that sum edges (1, 2, 3)
    num_edges = len(EDGES)

    def __init__(self, nodes: int = NODES, exclude_none: bool = False):
        """``nodes``: the benchmark's count with the input node; the cell is fixed, so only 4 is accepted."""
        if nodes != NODES:
            raise ConfigError(f"space nb201 has a fixed cell of {NODES} nodes; search.nodes must be {NODES}")
        self.ops = {"normal": NB201_OPS}
        self.exclude_none = bool(exclude_none)

    @classmethod
    def from_config(cls, cfg):
        exclude = cfg.get("nb201", {}).get("exclude_none", False)
        if not isinstance(exclude, bool):
            raise ConfigError(f"nb201.exclude_none must be true or false, got {exclude!r}")
        return cls(cfg.search.get("nodes", NODES), exclude_none=exclude)

    def __repr__(self):
        return f"Nb201Space(exclude_none={self.exclude_none})"

    # -- what relaxations ask --------------------------------------------------------------
    def alpha_shape(self, cell_type: str) -> tuple[int, int]:
        return self.num_edges, len(NB201_OPS)

    def edge_inputs(self):
        return [(i - 1, j) for i, j in EDGES]

    def node_edges(self, node: int) -> range:
        """Edges entering the ``node``-th summing node (0-based: node 0 is the cell's node 1)."""
        return node_edges(node + 1)

    def has_none(self, cell_type: str) -> bool:
        return True

    # -- search -----------------------------------------------------------------------------
    def build_supernet(self, relax, cfg, in_channels: int, num_classes: int):
        from .supernet import Supernet

        s = cfg.search
        return Supernet(relax, s.channels, s.layers, num_classes, in_channels, precision=cfg.get("precision", "auto"))

    def allowed(self) -> torch.Tensor:
        return torch.tensor([not (self.exclude_none and op == "none") for op in NB201_OPS])

    def derive(self, weights: dict, generator=None) -> Nb201Architecture:
        """Argmax per edge (over all 5 ops, or without `none` if ``exclude_none``)."""
        picks = best_ops(weights["normal"], self.allowed(), generator)
        return Nb201Architecture(tuple(NB201_OPS[o] for o in picks))

    def projection(self, cell_type: str, weights, generator=None) -> torch.Tensor:
        """The rule as a binary [6, 5] mask: one op per edge."""
        mask = torch.zeros(weights.shape)
        picks = best_ops(weights, self.allowed(), generator)
        mask[range(len(picks)), picks] = 1.0
        return mask.to(weights.device)

    def from_masks(self, masks: dict) -> Nb201Architecture:
        picks = masks["normal"].argmax(1).tolist()
        return Nb201Architecture(tuple(NB201_OPS[o] for o in picks))

    def op_params(self, op: str, channels: int) -> int:
        return sum(p.numel() for p in make_op(op, channels, affine=False).parameters())

    def random_architecture(self, rng: random.Random) -> Nb201Architecture:
        """Uniform over the space: an op per edge, uniformly among the 5 (4 without `none`)."""
        ops = [op for op, ok in zip(NB201_OPS, self.allowed().tolist()) if ok]
        return Nb201Architecture(tuple(rng.choice(ops) for _ in EDGES))

    def to_masks(self, architecture: Nb201Architecture) -> dict:
        """The binary [6, 5] mask of the architecture's op per edge: the inverse of ``from_masks``."""
        mask = torch.zeros(self.alpha_shape("normal"))
        mask[range(len(EDGES)), [NB201_OPS.index(op) for op in architecture.ops]] = 1.0
        return {"normal": mask}

    # -- retraining -------------------------------------------------------------------------
    def build_network(self, architecture, cfg, in_channels: int, num_classes: int):
        from .network import Nb201Network

        t = cfg.train
        return Nb201Network(architecture, t.channels, t.layers, num_classes, in_channels)
