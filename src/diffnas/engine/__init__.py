"""The one search loop and the one retraining loop, with run directories and checkpoints."""

from ..runtime.rundir import RunDir
from .loop import resolve_device, run_epochs
from .search import SearchJob, SearchResult, search
from .train import TrainJob, TrainResult, train

__all__ = [
    "RunDir",
    "SearchJob",
    "SearchResult",
    "TrainJob",
    "TrainResult",
    "resolve_device",
    "run_epochs",
    "search",
    "train",
]
