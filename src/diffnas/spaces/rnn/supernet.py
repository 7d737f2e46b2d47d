"""The search model: the language model around the mixed recurrent cell, and what methods ask a supernet."""

from __future__ import annotations

from ..base import RelaxedNetwork
from .model import LanguageModel, SearchCell
from .space import CELL_TYPE, DROPOUTS


class Supernet(RelaxedNetwork, LanguageModel):
    def __init__(self, relax, s, vocab: int):
        space = relax.space
        cell = SearchCell(relax, s.channels, space.nodes, s.dropouth, s.dropoutx)
        super().__init__(cell, vocab, s.channels, {k: s[k] for k in DROPOUTS}, ar=s.ar, tar=s.tar)
        self.relax = relax
        relax.cells_built(self.cell_keys())

    def cell_keys(self) -> list[tuple[str, int]]:
        return [(CELL_TYPE, 0)]

    def shared_parameters(self) -> dict:
        """The weights of no edge (embedding = tied decoder, the first state's matrix, BN): they feed every
        edge, so they go with all of them."""
        on_edges = {id(p) for ps in self.edge_parameters().values() for p in ps}
        return {"classifier": [p for p in self.weight_parameters() if id(p) not in on_edges]}

    def edge_parameters(self) -> dict:
        """{(0, edge): [its node's matrix]}: a node's incoming edges share one matrix (the reference's search)."""
        space = self.relax.space
        return {(0, e): [self.cell.ws[node]] for node in range(space.nodes) for e in space.node_edges(node)}
