"""diffnas: differentiable neural architecture search (DARTS and its successors) on PyTorch."""

from .runtime.threads import apply_policy

apply_policy()  # before anything imports torch: OpenMP reads its wait policy when it loads

from .api import list_methods, list_spaces, run, search, show, train  # noqa: E402
from .spaces import Genotype  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Genotype", "list_methods", "list_spaces", "run", "search", "show", "train", "__version__"]
