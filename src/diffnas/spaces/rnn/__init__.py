"""The DARTS recurrent cell space (``darts-rnn``): language modelling on Penn Treebank."""

from .space import DARTS_V2, RNNGenotype, RNNSpace

__all__ = ["DARTS_V2", "RNNGenotype", "RNNSpace"]
