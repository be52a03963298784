"""The rats networks of the MMVM rats code, on flattened spike-count windows of size d.

Encoder: d → d → d → D, LeakyReLU after every layer (the last included), then linear heads D → D for
``loc`` and ``log_var``. Decoder: D → d → d, LeakyReLU after each, then a linear d → d with no output
nonlinearity. The reference reads its second head as a log standard deviation; pyromm's contract reads it
as a log variance, which is the same linear head scaled by 2.
"""
from __future__ import annotations

from torch import nn

from pyromm.nn.mlp import MLPDecoder, MLPEncoder


def spike_encoder(input_dim: int, latent_dim: int) -> MLPEncoder:
    """``(N, input_dim)`` counts → ``(loc, log_var)``, each ``(N, latent_dim)``."""
    return MLPEncoder(input_dim, latent_dim, hidden=(input_dim, input_dim, latent_dim), activation=nn.LeakyReLU)


def spike_decoder(latent_dim: int, input_dim: int) -> MLPDecoder:
    """``(N, latent_dim)`` → unconstrained means ``(N, input_dim)``."""
    return MLPDecoder(latent_dim, input_dim, hidden=(input_dim, input_dim), activation=nn.LeakyReLU)
