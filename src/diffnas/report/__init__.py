"""Reports of runs read back from run directories: static plots (PNG) and the HTML page (a space draws its own
architectures)."""

from .html import REPORT, write_run_report
from .plots import plot_arch_weights, plot_curves, read_metrics

__all__ = ["REPORT", "plot_arch_weights", "plot_curves", "read_metrics", "write_run_report"]
