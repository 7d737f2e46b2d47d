"""Reports of a search: cell pictures of a genotype and plots read back from run directories."""

from .cells import draw_genotype
from .plots import plot_arch_weights, plot_curves, read_metrics

__all__ = ["draw_genotype", "plot_arch_weights", "plot_curves", "read_metrics"]
