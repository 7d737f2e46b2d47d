"""The DARTS recurrent cell space on word-level language modelling (Penn Treebank): the plug-in and its genotype.

The cell has ``nodes`` (8) searched nodes; node ``i`` has ``i + 1`` incoming edges (from
``s0`` and every earlier node), so 36 edges of 5 candidate activations. The rule keeps
one incoming edge per node: the predecessor whose best non-``none`` weight is largest,
with that best op (``RNNModelSearch.genotype`` of the reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...errors import ConfigError, GenotypeError
from ..base import Architecture, SearchSpace
from ..tasks import LANGUAGE_MODEL

RNN_OPS = ("none", "tanh", "relu", "sigmoid", "identity")
CELL_TYPE = "recurrent"

DROPOUTS = ("dropout", "dropouth", "dropoutx", "dropouti", "dropoute")

# the reference's search (train_search.py): the keys a method's paper values (CNN) must not change here
SEARCH = {
    "epochs": 50,
    "batch_size": 256,
    "channels": 300,  # embedding size = hidden size
    "nodes": 8,
    "w_lr": 20.0,
    "w_lr_min": 20.0,  # a constant learning rate: the cosine schedule from 20 to 20
    "w_momentum": 0.0,
    "w_wd": 5e-7,
    "grad_clip": 0.25,
    "a_lr": 3e-3,
    "a_betas": [0.9, 0.999],
    "a_wd": 1e-3,
}
SEARCH_ONLY = {
    "arch_data": "valid",  # valid: the architecture steps on the validation text (the reference) | split
    "bptt": 35,
    "eval_batch_size": 10,
    "dropout": 0.75,
    "dropouth": 0.25,
    "dropoutx": 0.75,
    "dropouti": 0.2,
    "dropoute": 0.0,
    "ar": 0.0,
    "tar": 1e-3,
}
# the reference's retraining (train.py)
TRAIN = {
    "epochs": 8000,
    "batch_size": 64,
    "channels": 850,
    "lr": 20.0,
    "wd": 8e-7,
    "grad_clip": 0.25,
    "bptt": 35,
    "max_extra": 20,  # longest window: bptt + max_extra
    "eval_batch_size": 10,
    "test_batch_size": 1,
    "nonmono": 5,  # switch to averaged SGD when the validation loss is worse than the best one 5 epochs ago
    "dropout": 0.75,
    "dropouth": 0.25,
    "dropoutx": 0.75,
    "dropouti": 0.2,
    "dropoute": 0.1,
    "ar": 0.0,
    "tar": 1e-3,
}


@dataclass
class RNNGenotype(Architecture):
    """One (activation, predecessor) per node; the output is the mean of the states in ``concat``."""

    space: str = "darts-rnn"
    recurrent: list = field(default_factory=list)
    concat: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "space": self.space,
            "nodes": len(self.recurrent),
            "recurrent": [[op, j] for op, j in self.recurrent],
            "concat": list(self.concat),
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "genotype") -> RNNGenotype:
        try:
            recurrent = [(op, j) for op, j in d["recurrent"]]
            concat = list(d.get("concat", range(1, len(recurrent) + 1)))
        except (KeyError, TypeError, ValueError) as e:
            raise GenotypeError(f"{source}: not a valid recurrent genotype ({type(e).__name__}: {e})") from None
        if not recurrent:
            raise GenotypeError(f"{source}: a recurrent genotype needs at least one node")
        for i, (op, j) in enumerate(recurrent):
            if op not in RNN_OPS[1:]:
                raise GenotypeError(f"{source}: node {i + 1} has op {op!r}; expected one of {', '.join(RNN_OPS[1:])}")
            if not isinstance(j, int) or isinstance(j, bool) or not 0 <= j <= i:
                raise GenotypeError(f"{source}: node {i + 1} takes state {j!r}; expected an earlier state 0..{i}")
        for i in concat:
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i <= len(recurrent):
                raise GenotypeError(f"{source}: concat index {i!r} is not a state 0..{len(recurrent)}")
        if d.get("space", "darts-rnn") != "darts-rnn":
            raise GenotypeError(f"{source}: space {d.get('space')!r} is not darts-rnn")
        return cls("darts-rnn", recurrent, concat)

    def __str__(self) -> str:
        nodes = ", ".join(f"{op}({j})" for op, j in self.recurrent)
        return f"recurrent: {nodes}; output: mean of states {list(self.concat)}"

    def draw(self, out_dir, stem: str = "genotype"):
        from .drawing import draw_genotype

        return draw_genotype(self, out_dir, stem)

    def graphs(self) -> dict:
        from .drawing import cell_graph

        return {"recurrent cell": cell_graph(self)}

    # no ``cell_ops()``: every edge of a recurrent cell has its own weights, so there is no parameter-free collapse


# the published DARTS-V2 cell (genotypes.py of the reference)
DARTS_V2 = RNNGenotype(
    "darts-rnn",
    [("sigmoid", 0), ("relu", 1), ("relu", 1), ("identity", 1), ("tanh", 2), ("sigmoid", 5), ("tanh", 3), ("relu", 5)],
    list(range(1, 9)),
)


class RNNSpace(SearchSpace):
    name = "darts-rnn"
    help = "DARTS recurrent cell on word-level language modelling: 5 activations, 8 nodes, 36 edges (PTB)"
    task = LANGUAGE_MODEL
    datasets = ("ptb", "text")
    # no partial channels: a part of a recurrent state is not defined (PC-DARTS, IDARTS refuse)
    provides = frozenset({"op-edges", "node-inputs", "projection", "random-architectures"})
    architecture = RNNGenotype
    cell_types = (CELL_TYPE,)
    defaults = {"search": {**SEARCH, **SEARCH_ONLY}, "train": TRAIN}
    method_defaults = {
        "*": {"search": SEARCH},  # what no method's paper values (CNN searches) may change on this space
        "darts-prime": {"reg": {"proximity": 1.0}},  # rho = 1.0 for text (DARTS-PRIME, section 5)
        "darts2": {"darts2": {"clip_virtual": True}},  # rnn/architect.py clips the virtual step's gradient
    }

    # CPU-sized runs (``subset``: the first N training tokens)
    presets = {
        "quick": {
            "subset": 50_000,
            "search": {"epochs": 3, "batch_size": 32, "channels": 64, "eval_batch_size": 10},
            "train": {"epochs": 6, "batch_size": 32, "channels": 128, "test_batch_size": 10},
        },
        "tiny": {
            "subset": 2000,
            "search": {"epochs": 1, "batch_size": 8, "channels": 8, "nodes": 3, "bptt": 8, "eval_batch_size": 4},
            "train": {
                "epochs": 1,
                "batch_size": 8,
                "channels": 8,
                "bptt": 8,
                "eval_batch_size": 4,
                "test_batch_size": 4,
            },
        },
    }

    def __init__(self, nodes: int = 8):
        self.nodes = int(nodes)
        if self.nodes < 1:
            raise ConfigError(f"space {self.name}: nodes must be >= 1, got {self.nodes}")
        self.ops = {CELL_TYPE: RNN_OPS}

    @classmethod
    def from_config(cls, cfg) -> RNNSpace:
        if cfg.search.get("arch_data") not in ("valid", "split"):
            raise ConfigError(f"search.arch_data must be valid or split, got {cfg.search.get('arch_data')!r}")
        for section in ("search", "train"):
            for key in DROPOUTS:
                p = cfg[section][key]
                if not 0.0 <= p < 1.0:
                    raise ConfigError(f"{section}.{key} must be in [0, 1), got {p}")
        return cls(nodes=cfg.search.nodes)

    def __eq__(self, other):
        return isinstance(other, RNNSpace) and other.nodes == self.nodes

    def __hash__(self):
        return hash((self.name, self.nodes))

    @property
    def num_edges(self) -> int:
        return self.nodes * (self.nodes + 1) // 2

    def alpha_shape(self, cell_type: str) -> tuple[int, int]:
        return self.num_edges, len(RNN_OPS)

    def has_none(self, cell_type: str) -> bool:
        return True

    def node_edges(self, node: int) -> range:
        start = node * (node + 1) // 2
        return range(start, start + node + 1)

    # -- search ----------------------------------------------------------------------------
    def build_supernet(self, relax, cfg, in_channels: int, num_classes: int):
        from .supernet import Supernet

        return Supernet(relax, cfg.search, num_classes)

    def choices(self, weights: torch.Tensor, generator=None) -> list[tuple[int, int]]:
        """(predecessor, op index) per node by the rule; ties broken in a random order drawn from ``generator``."""
        w = weights.detach().float().cpu().clone()
        w[:, RNN_OPS.index("none")] = float("-inf")
        out = []
        for node in range(self.nodes):
            rows = w[self.node_edges(node)]
            order = torch.randperm(rows.numel(), generator=generator) if generator is not None else None
            flat = rows.reshape(-1)
            # the largest entry over (predecessor, non-none op): the best edge's best op, the lowest index on ties
            k = order[flat[order].argmax()].item() if order is not None else flat.argmax().item()
            out.append(divmod(k, len(RNN_OPS)))
        return out

    def derive(self, weights: dict, generator=None) -> RNNGenotype:
        picks = self.choices(weights[CELL_TYPE], generator)
        return RNNGenotype(self.name, [(RNN_OPS[k], j) for j, k in picks], list(range(1, self.nodes + 1)))

    def projection(self, cell_type: str, weights, generator=None) -> torch.Tensor:
        """Pi_S: the rule as a binary [E, O] mask (one edge per node, its best non-none op)."""
        mask = torch.zeros(self.alpha_shape(cell_type))
        for node, (j, k) in enumerate(self.choices(weights, generator)):
            mask[self.node_edges(node)[j], k] = 1.0
        return mask.to(weights.device)

    def from_masks(self, masks: dict) -> RNNGenotype:
        m = masks[CELL_TYPE]
        recurrent = []
        for node in range(self.nodes):
            j, k = torch.nonzero(m[self.node_edges(node)])[0].tolist()
            recurrent.append((RNN_OPS[k], j))
        return RNNGenotype(self.name, recurrent, list(range(1, self.nodes + 1)))

    def random_architecture(self, rng) -> RNNGenotype:
        """Uniform over the genotypes the rule can derive: per node, a uniformly random predecessor and a
        uniformly random op other than `none`."""
        ops = [op for op in RNN_OPS if op != "none"]
        recurrent = [(rng.choice(ops), rng.randrange(node + 1)) for node in range(self.nodes)]
        return RNNGenotype(self.name, recurrent, list(range(1, self.nodes + 1)))

    def to_masks(self, architecture: RNNGenotype) -> dict:
        """The binary [E, O] mask of the genotype's (edge, op) choices: the inverse of ``from_masks``."""
        mask = torch.zeros(self.alpha_shape(CELL_TYPE))
        for node, (op, j) in enumerate(architecture.recurrent):
            mask[self.node_edges(node)[j], RNN_OPS.index(op)] = 1.0
        return {CELL_TYPE: mask}

    # -- retraining ------------------------------------------------------------------------
    def build_network(self, architecture, cfg, in_channels: int, num_classes: int):
        from .model import DerivedCell, LanguageModel

        t = cfg.train
        cell = DerivedCell(architecture, t.channels, t.dropouth, t.dropoutx)
        return LanguageModel(cell, num_classes, t.channels, {k: t[k] for k in DROPOUTS}, ar=t.ar, tar=t.tar)
