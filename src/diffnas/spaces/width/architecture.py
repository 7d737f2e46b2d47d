"""The widths file: the channels a width search keeps in every prunable layer of a backbone.

JSON: ``{"space": ..., "backbone": {...}, "widths": {layer: {"of": C, "kept": [indices]}}}``.
``backbone`` holds what fixes the unpruned shape (ResNet depth, width multiplier, ...), so a
file alone says which network to build; loading checks every layer against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import GenotypeError
from ..base import Architecture


@dataclass
class WidthArchitecture(Architecture):
    space: str
    backbone: dict
    kept: dict  # {layer: sorted kept channel indices}
    original: dict  # {layer: channels of the unpruned backbone}

    # -- what the file and the reports say -------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "space": self.space,
            "backbone": dict(self.backbone),
            "pruned_ratio": round(self.pruned_ratio, 6),
            "widths": {k: {"of": self.original[k], "kept": list(v)} for k, v in self.kept.items()},
        }

    @property
    def pruned_ratio(self) -> float:
        """Pruned channels over prunable channels, all layers together (the paper's PRC)."""
        total = sum(self.original.values())
        return 1.0 - sum(len(v) for v in self.kept.values()) / max(total, 1)

    def layer_ratios(self) -> dict:
        """{layer: fraction of its channels pruned}."""
        return {k: 1.0 - len(v) / self.original[k] for k, v in self.kept.items()}

    def facts(self) -> dict:
        """What a retraining reports beside accuracy: the pruned ratio, overall and per layer."""
        return {"pruned_ratio": self.pruned_ratio, "pruned_ratio_per_layer": self.layer_ratios()}

    def __str__(self) -> str:
        kept = sum(len(v) for v in self.kept.values())
        total = sum(self.original.values())
        return f"{self.space}: {kept}/{total} prunable channels kept ({100 * self.pruned_ratio:.1f}% pruned)"

    def draw(self, out_dir, stem: str = "widths") -> list[Path]:
        """A bar chart of each layer's kept channels against its original width."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        layers = list(self.kept)
        fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(layers) + 2), 3.5))
        x = range(len(layers))
        ax.bar(x, [self.original[k] for k in layers], color="#d0d0d0", label="original")
        ax.bar(x, [len(self.kept[k]) for k in layers], color="#3b75af", label="kept")
        ax.set_xticks(list(x), layers, rotation=90, fontsize=5 if len(layers) > 40 else 8)
        ax.set_ylabel("channels")
        ax.set_title(str(self), fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(out_dir) / f"{stem}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return [path]

    # -- reading -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict, source: str = "widths", original: dict | None = None) -> WidthArchitecture:
        """Validated against ``original`` ({layer: channels} of the backbone the file names, by default
        what its space builds from ``backbone``); one-line errors."""
        if original is None:
            from .space import original_widths

            original = original_widths(d, source)
        widths = d.get("widths")
        if not isinstance(widths, dict):
            raise GenotypeError(f"{source}: a widths file needs a 'widths' object of layers")
        missing, unknown = sorted(set(original) - set(widths)), sorted(set(widths) - set(original))
        if unknown:
            raise GenotypeError(f"{source}: unknown layer(s) {', '.join(unknown[:3])} for this backbone")
        if missing:
            raise GenotypeError(f"{source}: layer(s) {', '.join(missing[:3])} missing ({len(missing)} in all)")
        kept = {}
        for layer, c in original.items():
            entry = widths[layer]
            if not isinstance(entry, dict) or not isinstance(entry.get("kept"), list):
                raise GenotypeError(f"{source}: layer {layer} needs {{'of': {c}, 'kept': [channel indices]}}")
            if entry.get("of", c) != c:
                raise GenotypeError(f"{source}: layer {layer} has {c} channels in this backbone, not {entry['of']!r}")
            idx = entry["kept"]
            if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < c for i in idx):
                raise GenotypeError(f"{source}: layer {layer} keeps channels outside 0..{c - 1}")
            if not idx or len(set(idx)) != len(idx):
                raise GenotypeError(f"{source}: layer {layer} must keep at least one channel, each once")
            kept[layer] = sorted(idx)
        return cls(d["space"], dict(d.get("backbone") or {}), kept, dict(original))
