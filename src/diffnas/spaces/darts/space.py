"""The DARTS CNN cell spaces: which ops each cell type chooses from, the cell topology, and the plug-in.

Cells have ``nodes`` intermediate nodes; node ``i`` has ``2 + i`` incoming edges (from
the two cell inputs and every earlier node), numbered in that order. A network stacks
normal and reduction cells (reductions at 1/3 and 2/3 of the depth); the genotype keeps
``edges_per_node`` edges per node, one op each.
"""

from __future__ import annotations

from ...errors import ConfigError
from ..base import SearchSpace
from .ops import OPS

CELL_TYPES = ("normal", "reduce")

DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

# Reductions sit at layers // 3 and 2 * layers // 3 (``network.reduction_indices``): 1 or 2 cells are all
# reduction cells, so a search would print a normal cell it never searched, and a retraining ignore it.
MIN_LAYERS = 3

IMAGE_DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder")

# DARTS's evaluation protocol (the paper's CIFAR-10 retraining): the network a genotype is retrained as
DARTS_TRAIN = {
    "protocol": "cifar",  # the named protocol these values came from (``--protocol``, see PROTOCOLS)
    "epochs": 600,
    "batch_size": 96,
    "channels": 36,
    "layers": 20,
    "lr": 0.025,
    "lr_min": 0.0,
    "momentum": 0.9,
    "wd": 3e-4,
    "grad_clip": 5.0,
    "cutout": 16,
    "crop_padding": None,
    "drop_path": 0.2,
    "auxiliary": 0.4,  # weight of the auxiliary head's loss; 0 turns the head off
    "stem": "cifar",  # cifar: one 3x3 convolution | imagenet: three stride-2 convolutions to 28x28
    "label_smoothing": 0.0,  # of the training loss (the test loss is plain cross-entropy)
    "lr_schedule": "cosine",  # cosine (to lr_min) | exponential (x lr_gamma per epoch) | linear (PC-DARTS)
    "lr_gamma": 0.97,
    "warmup_epochs": 0,  # linear learning-rate warm-up over the first epochs
    "pipeline": "memory",  # memory: decoded once, held as uint8 | stream: decoded per batch (data/stream.py)
    "crop_size": 224,  # stream: random resized crop for training, resize crop_size * 8/7 + centre crop for tests
    "workers": 4,  # stream: decoding processes
    "bn_batches": 0,  # re-estimate BN statistics on this many training batches before testing (0: the paper's)
}

# DARTS's mobile setting (quark0/darts train_imagenet.py): 14 cells of 48 channels on the ImageNet stem
IMAGENET_TRAIN = {
    "protocol": "imagenet",
    "epochs": 250,
    "batch_size": 128,
    "channels": 48,
    "layers": 14,
    "lr": 0.1,
    "wd": 3e-5,
    "cutout": 0,
    "drop_path": 0.0,
    "auxiliary": 0.4,
    "stem": "imagenet",
    "label_smoothing": 0.1,
    "lr_schedule": "exponential",
    "lr_gamma": 0.97,
    "pipeline": "stream",
}

# PC-DARTS's ImageNet retraining (its train_imagenet.py): a large batch, warm-up, then linear decay
IMAGENET_PC_TRAIN = {
    **IMAGENET_TRAIN,
    "protocol": "imagenet-pc",
    "batch_size": 1024,
    "lr": 0.5,
    "warmup_epochs": 5,
    "lr_schedule": "linear",
}

PROTOCOLS = {"cifar": DARTS_TRAIN, "imagenet": IMAGENET_TRAIN, "imagenet-pc": IMAGENET_PC_TRAIN}


def _same(ops) -> dict:
    return {"normal": tuple(ops), "reduce": tuple(ops)}


class DartsCellSpace(SearchSpace):
    """A DARTS-style cell space; subclasses name one op set (``candidate_ops``)."""

    datasets = IMAGE_DATASETS
    provides = frozenset(
        {
            "op-edges",
            "node-inputs",
            "partial-channels",
            "node-norm",
            "edge-shapes",
            "op-params",
            "projection",
            "random-architectures",
        }
    )
    defaults = {"train": DARTS_TRAIN}
    protocols = PROTOCOLS
    cell_types = CELL_TYPES
    candidate_ops: dict = {}
    stem = "cifar"  # the supernet's stem (network.build_stem)

    def __init__(self, nodes: int = 4, edges_per_node: int = 2, ops: dict | None = None):
        self.ops = {t: tuple(v) for t, v in (ops or self.candidate_ops).items()}
        self.nodes, self.edges_per_node = int(nodes), int(edges_per_node)
        for cell_type, names in self.ops.items():
            unknown = [n for n in names if n not in OPS]
            if unknown:
                raise ConfigError(f"space {self.name}: unknown ops {unknown} in {cell_type} cells")
        if self.nodes < 1:
            raise ConfigError(f"space {self.name}: nodes must be >= 1, got {self.nodes}")

    @classmethod
    def from_config(cls, cfg) -> DartsCellSpace:
        """The space of ``cfg``; refuses a stack too shallow to have a normal cell (see ``MIN_LAYERS``)."""
        for section in ("search", "train"):
            layers = cfg.get(section, {}).get("layers", MIN_LAYERS)
            if layers < MIN_LAYERS:
                raise ConfigError(
                    f"{section}.layers = {layers}: space {cls.name} needs at least {MIN_LAYERS} cells "
                    "(with fewer, every cell is a reduction cell and the normal cell is never used)"
                )
        return cls(nodes=cfg.search.nodes)

    def variant(self, **changes) -> DartsCellSpace:
        """The same space with other ``nodes``, ``edges_per_node`` or ``ops``."""
        kw = {"nodes": self.nodes, "edges_per_node": self.edges_per_node, "ops": self.ops, **changes}
        return type(self)(**kw)

    def with_nodes(self, nodes: int) -> DartsCellSpace:
        return self.variant(nodes=nodes)

    def _key(self):
        return (self.name, tuple(sorted(self.ops.items())), self.nodes, self.edges_per_node)

    def __eq__(self, other):
        return isinstance(other, DartsCellSpace) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"{type(self).__name__}(nodes={self.nodes}, edges_per_node={self.edges_per_node})"

    # -- topology ---------------------------------------------------------------------------
    @property
    def num_edges(self) -> int:
        return sum(2 + i for i in range(self.nodes))

    def alpha_shape(self, cell_type: str) -> tuple[int, int]:
        return self.num_edges, len(self.ops[cell_type])

    def edge_inputs(self):
        """(node, input) for every edge, in edge order."""
        return [(node, j) for node in range(self.nodes) for j in range(2 + node)]

    def node_edges(self, node: int) -> range:
        """Edge indices of the edges entering ``node``."""
        start = sum(2 + i for i in range(node))
        return range(start, start + 2 + node)

    def has_none(self, cell_type: str) -> bool:
        return "none" in self.ops[cell_type]

    # -- the plug-in interface ---------------------------------------------------------------
    @property
    def architecture(self):
        from .genotype import Genotype

        return Genotype

    def build_supernet(self, relax, cfg, in_channels: int, num_classes: int):
        from .supernet import Supernet

        s = cfg.search
        precision = cfg.get("precision", "auto")
        return Supernet(relax, s.channels, s.layers, num_classes, in_channels, precision=precision, stem=self.stem)

    def derive(self, weights: dict, generator=None):
        from .genotype import derive_genotype

        return derive_genotype(self, weights, generator)

    def projection(self, cell_type: str, weights, generator=None):
        """Pi_S: the binary [E, O] mask of the genotype rule (proximity, ADMM, NASP's prox_C1)."""
        from .genotype import discrete_mask

        return discrete_mask(self, cell_type, weights, generator)

    def from_masks(self, masks: dict):
        from .genotype import genotype_from_masks

        return genotype_from_masks(self, masks)

    def random_architecture(self, rng):
        """Uniform over the genotypes the DARTS rule can derive: per cell type and node, a uniformly random set
        of ``edges_per_node`` distinct inputs, and on each kept edge a uniformly random op other than `none`."""
        from .genotype import random_genotype

        return random_genotype(self, rng)

    def to_masks(self, architecture) -> dict:
        from .genotype import genotype_masks

        return genotype_masks(self, architecture)

    def op_params(self, op: str, channels: int) -> int:
        """Parameters of ``op`` at ``channels`` channels, stride 1, as built in the supernet."""
        if op == "none":
            return 0
        return sum(p.numel() for p in OPS[op](channels, 1, False).parameters())

    def build_network(self, architecture, cfg, in_channels: int, num_classes: int):
        from .network import DerivedNetwork

        t = cfg.train
        return DerivedNetwork(
            architecture,
            t.channels,
            t.layers,
            num_classes,
            in_channels,
            auxiliary=t.auxiliary > 0,
            stem=t.get("stem", "cifar"),
        )

    def describe(self) -> str:
        return self.help


class DartsSpace(DartsCellSpace):
    name = "darts"
    help = "DARTS CNN cell: 8 ops incl. none, 4 nodes, 14 edges (DARTS, DARTS-CD, PC-DARTS, RARTS)"
    candidate_ops = _same(DARTS_OPS)


# PC-DARTS's direct ImageNet search (train_search_imagenet.py), IDARTS's too: 50 epochs, batch 1024, warm-up, K = 2
IMAGENET_SEARCH = {
    "epochs": 50,
    "batch_size": 1024,
    "w_lr": 0.5,
    "w_lr_min": 0.0,
    "w_lr_warmup": 5,
    "w_wd": 3e-5,  # the paper's (the public code's default is 3e-4)
    "a_lr": 6e-3,
    "arch_start_epoch": 35,
}


class DartsImageNetSpace(DartsSpace):
    name = "darts-imagenet"
    help = "the DARTS cell searched directly on ImageNet: PC-DARTS's 224 -> 28 stem, 8 cells, streamed image folder"
    stem = "imagenet"
    datasets = ("imagefolder",)
    defaults = {
        "train": IMAGENET_PC_TRAIN,  # PC-DARTS retrains what it found on ImageNet with its own protocol
        "search": {
            "channels": 16,
            "layers": 8,
            "train_portion": 0.8,  # without a val_list: PC-DARTS's 10 % of each class for weights, 2.5 % for alphas
            "w_lr_schedule": "cosine",
            "w_lr_warmup": 0,  # linear warm-up epochs of the weights' learning rate
            "pipeline": "stream",
            "crop_size": 224,
            "workers": 4,
            "train_list": None,  # `diffnas subset` file of DIR/train for the weights (None: all of DIR/train)
            "val_list": None,  # ... for the architecture (None: search.train_portion of the weights' images)
            "hessian_every": 0,  # the monitor reads an in-memory batch
        },
    }
    method_defaults = {
        "pc-darts": {"relax": {"k": 2}, "search": IMAGENET_SEARCH},
        "idarts": {"relax": {"k": 2}, "search": IMAGENET_SEARCH, "idarts": {"start_epoch": 40, "lambda": 0.05}},
    }


class DartsNoNoneSpace(DartsCellSpace):
    name = "darts-nonone"
    help = "DARTS CNN cell without none: 7 ops (NASP, DARTS-PRIME's CRB)"
    candidate_ops = _same(DARTS_OPS[1:])


class Nasp12Space(DartsCellSpace):
    name = "nasp12"
    help = "NASP's larger space: 8 normal ops, 5 reduction ops"
    candidate_ops = {
        "normal": (
            "skip_connect",
            "conv_3x1_1x3",
            "dil_conv_3x3",
            "conv_1x1",
            "conv_3x3",
            "sep_conv_3x3",
            "sep_conv_5x5",
            "sep_conv_7x7",
        ),
        "reduce": ("skip_connect", "avg_pool_3x3", "max_pool_3x3", "max_pool_5x5", "max_pool_7x7"),
    }


# the name the rest of the code has always used for a DARTS cell space
Space = DartsCellSpace
