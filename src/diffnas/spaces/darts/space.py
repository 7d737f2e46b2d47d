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
    "bn_batches": 0,  # re-estimate BN statistics on this many training batches before testing (0: the paper's)
}


def _same(ops) -> dict:
    return {"normal": tuple(ops), "reduce": tuple(ops)}


class DartsCellSpace(SearchSpace):
    """A DARTS-style cell space; subclasses name one op set (``candidate_ops``)."""

    datasets = IMAGE_DATASETS
    provides = frozenset(
        {"op-edges", "node-inputs", "partial-channels", "node-norm", "edge-shapes", "op-params", "projection"}
    )
    defaults = {"train": DARTS_TRAIN}
    cell_types = CELL_TYPES
    candidate_ops: dict = {}

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
        return Supernet(relax, s.channels, s.layers, num_classes, in_channels, precision=cfg.get("precision", "auto"))

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

    def op_params(self, op: str, channels: int) -> int:
        """Parameters of ``op`` at ``channels`` channels, stride 1, as built in the supernet."""
        if op == "none":
            return 0
        return sum(p.numel() for p in OPS[op](channels, 1, False).parameters())

    def build_network(self, architecture, cfg, in_channels: int, num_classes: int):
        from .network import DerivedNetwork

        t = cfg.train
        return DerivedNetwork(architecture, t.channels, t.layers, num_classes, in_channels, auxiliary=t.auxiliary > 0)

    def describe(self) -> str:
        return self.help


class DartsSpace(DartsCellSpace):
    name = "darts"
    help = "DARTS CNN cell: 8 ops incl. none, 4 nodes, 14 edges (DARTS, DARTS-CD, PC-DARTS, RARTS)"
    candidate_ops = _same(DARTS_OPS)


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
