"""The NAS-Bench-201 (NATS-Bench topology) cell space: 5 ops, 4 nodes, 6 edges, 15,625 cells."""

from .architecture import Nb201Architecture
from .space import Nb201Space

__all__ = ["Nb201Architecture", "Nb201Space"]
