"""What a search space is to the rest of diffnas: the one interface methods, relaxations and the engine use.

A space owns everything that depends on the shape of the architecture: how its
supernet is built around a relaxation, the architecture type a search ends with (rule
from architecture weights, JSON form, validation, string form, drawing), the network
that architecture is retrained as and that network's training protocol, the task and
its metric, and the data sets it accepts. Parts never look inside a space's networks:
they ask the space (or its supernet) through the methods below.

Capabilities are how parts and spaces agree before anything runs: a part lists the
capabilities it ``requires`` and a space the ones it ``provides``; ``diffnas.catalog``
compares them and says in one line what does not fit.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..config import deep_merge
from ..errors import ConfigError, GenotypeError
from .tasks import CLASSIFICATION

# What a space may provide (and a relaxation, method or regularizer may require):
CAPABILITIES = {
    "op-edges": "one architecture row per edge, one entry per candidate op (softmax-style relaxations)",
    "node-inputs": "nodes sum several incoming edges (per-node edge normalization, edge selection)",
    "partial-channels": "edges can run their ops on 1/K of the channels (PC-DARTS)",
    "node-norm": "a batch norm after each node's sum (DARTS-PRIME's CRB)",
    "edge-shapes": "the supernet tells the input shape of every edge's ops (latency tables)",
    "op-params": "the parameter count of every candidate op (model-size penalties)",
    "projection": "a discrete projection of architecture weights onto valid architectures",
    "random-architectures": "uniformly random architectures and their op masks (random search: random, rsws)",
    "channel-scores": "one architecture score per channel of the prunable layers (width search, ``arch_shapes``)",
}


@dataclass
class Mixing:
    """A relaxation's answer to a supernet cell: how to mix the ops of each edge."""

    weights: torch.Tensor  # [E, O]: output of edge e = sum over active o of weights[e, o] * op_o(x)
    active: list  # per edge, the op indices to compute
    edge_weights: torch.Tensor | None = None  # [E]: scales each edge's output in its node's sum
    # per edge: True where the edge is a single path, its active op (if any) at a constant weight of exactly 1
    # (DARTS-CD's max-alpha edges, equation 2): its output is the op's output as is, no multiply, and no
    # gradient reaches the architecture through it, so a supernet may leave the row out of autograd; None: none
    single_path: list | None = None


class Architecture:
    """A found architecture (a genotype): what a search writes and a retraining reads.

    Subclasses implement ``to_dict`` / ``from_dict`` (with validation and one-line
    errors), ``__str__`` and ``draw``; the JSON file always names its ``space``, so a
    file finds its own space (``diffnas.spaces.load_architecture``).
    """

    space: str

    def to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict, source: str = "genotype") -> Architecture:
        raise NotImplementedError

    def draw(self, out_dir, stem: str = "genotype") -> list[Path]:
        """Pictures of the architecture in ``out_dir``; returns the files written."""
        return []

    def graphs(self) -> dict:
        """{title: ``graphviz.Digraph``} of the architecture's parts (cells, recurrent cell, widths):
        what the HTML report embeds as SVG. A space without a drawing returns {} (the report shows the text)."""
        return {}

    def facts(self) -> dict:
        """Numbers a retraining reports beside its scores (a widths file: the pruned ratio per layer); {} if none."""
        return {}

    def cell_ops(self) -> dict:
        """{cell type: [the chosen op of each edge]}: what the collapse monitors count; {} if the space has none."""
        return {}

    def short(self) -> str:
        """The architecture on part of one line (the per-epoch line of a search)."""
        return " ".join(str(self).split())

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path) -> Architecture:
        """Read a genotype file (or a run directory's ``genotype.json``) as this class."""
        d, source = read_json(path)
        return cls.from_dict(d, source)


# where a directory keeps its architecture: a search or train run's own, or a `diffnas run`'s parts
ARCHITECTURE_FILES = ("genotype.json", "search/genotype.json", "train/genotype.json")


def architecture_path(path) -> Path:
    """The genotype file a path names: the file itself, or the architecture of a run directory (a search,
    a retraining, or a ``diffnas run`` holding ``search/`` and ``train/``). The one place that says so."""
    path = Path(path)
    if not path.is_dir():
        if not path.is_file():
            raise GenotypeError(f"{path}: no such genotype file or run directory")
        return path
    for name in ARCHITECTURE_FILES:
        if (path / name).is_file():
            return path / name
    raise GenotypeError(f"{path}: no {' or '.join(ARCHITECTURE_FILES)} here (is it a diffnas run directory?)")


def read_json(path) -> tuple[dict, str]:
    path = architecture_path(path)
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenotypeError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise GenotypeError(f"{path}: a genotype is a JSON object")
    return d, str(path)



class RelaxedNetwork:
    """What every supernet answers the step frame (a mixin beside ``nn.Module``): its weights, apart from the
    relaxation's, and the architecture parameters (the relaxation's)."""

    relax: nn.Module

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.relax.parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def arch_parameters(self) -> list[nn.Parameter]:
        return self.relax.arch_parameters()


class SearchSpace:
    """Base of every space plug-in; a subclass with a ``name`` in a module of ``diffnas.spaces`` is registered.

    An instance is one configured space (e.g. the DARTS cell with 4 nodes).
    """

    name = ""
    help = ""
    task = CLASSIFICATION  # what its networks are trained for and judged by (loss, evaluation)
    datasets: tuple = ()  # data set names it accepts
    provides: frozenset = frozenset()  # capabilities (see CAPABILITIES)
    architecture: type[Architecture] = Architecture
    defaults: dict = {}  # config keys this space sets: its retraining protocol (``train``) at least
    # named retraining protocols (``diffnas train --protocol NAME``): each a ``train`` section over ``defaults``'s
    protocols: dict = {}
    cell_types: tuple = ()  # the groups of architecture parameters (one alpha matrix each)
    # config keys this space sets over a method's paper defaults: for every method ("*": its protocol, which
    # papers' values for other spaces may not change) and per method name (a paper's settings for this space);
    # ``defaults`` sit below the methods' defaults, these above them
    method_defaults: dict = {}
    presets: dict = {}  # preset name -> the space's own version of a shared preset (``config.PRESETS``)

    @classmethod
    def from_config(cls, cfg) -> SearchSpace:
        return cls()

    @classmethod
    def protocol(cls, name: str) -> dict:
        """The ``train`` values of the protocol ``name``; one line naming the space's protocols if it has no such."""
        if name not in cls.protocols:
            have = ", ".join(cls.protocols) or "none but its default"
            raise ConfigError(f"space {cls.name} has no retraining protocol {name!r} (it has {have})")
        return cls.protocols[name]

    @classmethod
    def defaults_for(cls, method: str) -> dict:
        """The layer over ``method``'s paper defaults on this space (see ``method_defaults``)."""
        return deep_merge(cls.method_defaults.get("*", {}), cls.method_defaults.get(method, {}))

    # -- the architecture parameters a relaxation allocates ---------------------------------
    def alpha_shape(self, cell_type: str) -> tuple[int, int]:
        """(edges, candidate ops) of one cell type's architecture matrix."""
        raise NotImplementedError

    def arch_shapes(self) -> dict:
        """{name: shape} of every architecture parameter: one [E, O] matrix per cell type for a space of op
        edges; a space of other parameters (one score per channel: the width spaces) declares its own."""
        return {t: self.alpha_shape(t) for t in self.cell_types}

    # -- search ----------------------------------------------------------------------------
    def build_supernet(self, relax, cfg, in_channels: int, num_classes: int) -> nn.Module:
        """The one-shot network around ``relax``; it has ``weight_parameters()`` and ``arch_parameters()``."""
        raise NotImplementedError

    def derive(self, weights: dict, generator: torch.Generator | None = None) -> Architecture:
        """The architecture rule: per-cell-type weights (what the relaxation ranks) -> an architecture."""
        raise NotImplementedError

    # -- retraining ------------------------------------------------------------------------
    def build_network(self, architecture: Architecture, cfg, in_channels: int, num_classes: int) -> nn.Module:
        """The network ``architecture`` is retrained as, at ``cfg.train``'s scale."""
        raise NotImplementedError

    # -- random search (capability ``random-architectures``) ---------------------------------
    def random_architecture(self, rng: random.Random) -> Architecture:
        """A uniformly random architecture: every architecture the space's rule can produce is equally likely
        (each subclass states what that means in its terms), drawn only from ``rng`` so a seed fixes it."""
        raise NotImplementedError(f"space {self.name} draws no random architectures")

    def to_masks(self, architecture: Architecture) -> dict:
        """{cell type: binary [E, O] mask}: the ops ``architecture`` computes on each edge of the supernet, so
        the supernet can run it alone (single path). The inverse of ``from_masks`` where a space has both."""
        raise NotImplementedError(f"space {self.name} cannot run one architecture in its supernet")

    def parse(self, d: dict, source: str = "genotype") -> Architecture:
        return self.architecture.from_dict(d, source)

    def describe(self) -> str:
        return self.help
