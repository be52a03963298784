"""Encoder and decoder networks following the contract of ``docs/architecture.md``."""
from pyromm.nn.mlp import MLPDecoder, MLPEncoder
from pyromm.nn.polymnist import (
    PolyMNISTConvDecoder,
    PolyMNISTConvEncoder,
    PolyMNISTResNetDecoder,
    PolyMNISTResNetEncoder,
    ResidualBlock,
)

__all__ = [
    "MLPEncoder",
    "MLPDecoder",
    "PolyMNISTResNetEncoder",
    "PolyMNISTResNetDecoder",
    "PolyMNISTConvEncoder",
    "PolyMNISTConvDecoder",
    "ResidualBlock",
]
