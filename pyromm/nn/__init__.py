"""Encoder and decoder networks following the contract of ``docs/architecture.md``."""
from pyromm.nn.mlp import MLPDecoder, MLPEncoder, MLPProjector
from pyromm.nn.polymnist import (
    PolyMNISTConvDecoder,
    PolyMNISTConvEncoder,
    PolyMNISTResNetDecoder,
    PolyMNISTResNetEncoder,
    ResidualBlock,
)
from pyromm.nn.spectrogram import SpectrogramConvDecoder, SpectrogramConvEncoder

__all__ = [
    "MLPEncoder",
    "MLPDecoder",
    "MLPProjector",
    "PolyMNISTResNetEncoder",
    "PolyMNISTResNetDecoder",
    "PolyMNISTConvEncoder",
    "PolyMNISTConvDecoder",
    "ResidualBlock",
    "SpectrogramConvEncoder",
    "SpectrogramConvDecoder",
]
