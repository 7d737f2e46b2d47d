"""Width search (RARTS section IV-B): per-channel architecture scores over ResNet and MobileNetV2 backbones,
pruned into a widths file that retrains as a physically smaller network (docs/spaces/width.md)."""

from .architecture import WidthArchitecture
from .space import MobileNetV2Width, ResNet20Width, ResNet56Width, ResNet164Width, WidthSpace

__all__ = ["MobileNetV2Width", "ResNet20Width", "ResNet56Width", "ResNet164Width", "WidthArchitecture", "WidthSpace"]
