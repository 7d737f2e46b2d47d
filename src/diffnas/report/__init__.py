"""Reports of runs: plots read back from run directories (a space draws its own architectures)."""

from .plots import plot_arch_weights, plot_curves, read_metrics

__all__ = ["plot_arch_weights", "plot_curves", "read_metrics"]
