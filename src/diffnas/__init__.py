"""diffnas: differentiable neural architecture search (DARTS and its successors) on PyTorch."""

from .api import list_methods, list_spaces, run, search, show, train
from .spaces import Genotype

__version__ = "0.1.0"

__all__ = ["Genotype", "list_methods", "list_spaces", "run", "search", "show", "train", "__version__"]
