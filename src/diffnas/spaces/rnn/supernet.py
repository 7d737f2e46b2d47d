"""The search model: the language model around the mixed recurrent cell, and what methods ask a supernet."""

from __future__ import annotations

import torch.nn as nn

from .model import LanguageModel, SearchCell
from .space import CELL_TYPE, DROPOUTS


class Supernet(LanguageModel):
    def __init__(self, relax, s, vocab: int):
        space = relax.space
        cell = SearchCell(relax, s.channels, space.nodes, s.dropouth, s.dropoutx)
        super().__init__(cell, vocab, s.channels, {k: s[k] for k in DROPOUTS}, ar=s.ar, tar=s.tar)
        self.relax = relax

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.relax.parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def arch_parameters(self) -> list[nn.Parameter]:
        return self.relax.arch_parameters()

    def cell_keys(self) -> list[tuple[str, int]]:
        return [(CELL_TYPE, 0)]

    def shared_parameters(self) -> dict:
        """The weights of no edge (DARTS-CD's ``train_shared``): the embedding (tied to the decoder) as the stem, the
        decoder's bias as the classifier, the first state's matrix as the cell's input preprocessing."""
        return {"stem": [self.encoder.weight], "classifier": [self.decoder.bias], 0: [self.cell.w0]}

    def edge_parameters(self) -> dict:
        """{(0, edge): [its node's matrix]}: a node's incoming edges share one matrix (the reference's search)."""
        space = self.relax.space
        return {(0, e): [self.cell.ws[node]] for node in range(space.nodes) for e in space.node_edges(node)}
