"""The one-shot supernet built from a space and a relaxation."""

from .network import MixedEdge, SearchCell, Supernet, channel_shuffle

__all__ = ["MixedEdge", "SearchCell", "Supernet", "channel_shuffle"]
