"""A modality: its encoder, decoder, likelihood, data shape and likelihood weight."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pyromm.likelihoods import Likelihood


@dataclass(eq=False)
class Modality:
    """One observed modality x_m.

    ``encoder(x: (N, *event_shape)) -> (loc, log_var)``, each ``(N, D)``;
    ``decoder(z: (N, D)) -> params`` of shape ``(N, *event_shape)`` (Categorical: ``(N, *event_shape, C)``).
    ``weight`` multiplies log p(x_m | z) in every objective (λ_m / w_m in the papers).
    """

    name: str
    encoder: nn.Module
    decoder: nn.Module
    likelihood: Likelihood
    event_shape: int | tuple[int, ...]
    weight: float = 1.0

    def __post_init__(self) -> None:
        shape = (self.event_shape,) if isinstance(self.event_shape, int) else self.event_shape
        try:
            self.event_shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise TypeError(
                f"modality {self.name!r}: event_shape must be an int or a sequence of ints, got {self.event_shape!r}"
            ) from None
        if any(s < 1 for s in self.event_shape):
            raise ValueError(f"modality {self.name!r}: event_shape sizes must be >= 1, got {self.event_shape}")
        if self.likelihood.event_dim != len(self.event_shape):
            raise ValueError(
                f"modality {self.name!r}: likelihood event_dim {self.likelihood.event_dim} does not match "
                f"event_shape {self.event_shape}"
            )
        if self.weight < 0:
            raise ValueError(f"modality {self.name!r}: weight must be >= 0, got {self.weight}")

    def check_data(self, x: torch.Tensor) -> None:
        """Raise a named error if ``x`` (a batch of this modality) has the wrong shape, dtype or values."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"modality {self.name!r}: data shape {tuple(x.shape)} does not match (batch, *{self.event_shape})"
            )
        self.likelihood.check_data(self.name, x)
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"modality {self.name!r}: data contain NaN or inf")
