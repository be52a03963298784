"""Per-modality observation models p(x_m | z) built from decoder outputs.

A likelihood turns decoder output ``params`` of shape ``(*batch, *event_shape)`` (Categorical:
``(*batch, *event_shape, num_classes)``) into a Pyro distribution whose event covers the whole
modality, so ``log_prob`` returns ``(*batch,)``: log p(x_m | z) summed over data dimensions.
"""
from __future__ import annotations

import torch
import pyro.distributions as dist
from torch import Tensor

from pyromm.distributions.fixed_scale import FixedScaleLaplace, FixedScaleNormal


class Likelihood:
    """Base class: ``distribution(params)``, ``log_prob(params, x)`` and ``mean(params)``."""

    def __init__(self, event_dim: int) -> None:
        self.event_dim = event_dim

    def base(self, params: Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def distribution(self, params: Tensor) -> dist.TorchDistribution:
        """p(x | z) with every data dimension in the event."""
        return self.base(params).to_event(self.event_dim)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """log p(x | z) = Σ_d log p(x_d | params_d), shape ``(*batch,)``."""
        return self.distribution(params).log_prob(x)

    def mean(self, params: Tensor) -> Tensor:
        """E[x | z], used for generation and reconstruction error."""
        return self.base(params).mean

    def check_data(self, name: str, x: Tensor) -> None:
        """Raise if ``x`` cannot be data of this likelihood (dtype or range)."""
        if not x.is_floating_point():
            raise TypeError(f"modality {name!r}: {type(self).__name__} likelihood needs float data, got {x.dtype}")

    def config(self) -> dict:
        return {"type": type(self).__name__, "event_dim": self.event_dim}


class Laplace(Likelihood):
    """Laplace(x; loc = decoder output, scale) with a fixed scale (0.75 in the MMVM/MMVAE papers)."""

    def __init__(self, event_dim: int, scale: float = 0.75) -> None:
        super().__init__(event_dim)
        if scale <= 0:
            raise ValueError(f"Laplace scale must be positive, got {scale}")
        self.scale = float(scale)

    def base(self, params: Tensor) -> dist.TorchDistribution:
        return dist.Laplace(params, torch.full((), self.scale, dtype=params.dtype, device=params.device))

    def distribution(self, params: Tensor) -> FixedScaleLaplace:
        """p(x | z) = Π_d Laplace(x_d; params_d, b), log p = −(1/b) Σ_d |x_d − params_d| − n log 2b."""
        return FixedScaleLaplace(params, self.scale, self.event_dim)

    def config(self) -> dict:
        return {**super().config(), "scale": self.scale}


class Normal(Likelihood):
    """Normal(x; loc = decoder output, scale) with a fixed scale."""

    def __init__(self, event_dim: int, scale: float = 1.0) -> None:
        super().__init__(event_dim)
        if scale <= 0:
            raise ValueError(f"Normal scale must be positive, got {scale}")
        self.scale = float(scale)

    def base(self, params: Tensor) -> dist.TorchDistribution:
        return dist.Normal(params, torch.full((), self.scale, dtype=params.dtype, device=params.device))

    def distribution(self, params: Tensor) -> FixedScaleNormal:
        """p(x | z) = Π_d N(x_d; params_d, σ²), log p = −(1/2σ²) Σ_d (x_d − params_d)² − n (log σ + ½ log 2π)."""
        return FixedScaleNormal(params, self.scale, self.event_dim)

    def config(self) -> dict:
        return {**super().config(), "scale": self.scale}


class Bernoulli(Likelihood):
    """Bernoulli(x; logits = decoder output); data must lie in [0, 1]."""

    def base(self, params: Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=params, validate_args=False)

    def check_data(self, name: str, x: Tensor) -> None:
        super().check_data(name, x)
        if bool((x < 0).any()) or bool((x > 1).any()):
            raise ValueError(f"modality {name!r}: Bernoulli data must lie in [0, 1]")


class Categorical(Likelihood):
    """Categorical(x; logits = decoder output); data are integer class indices.

    Decoder output has one extra trailing dimension of size ``num_classes``.
    """

    def __init__(self, event_dim: int, num_classes: int) -> None:
        super().__init__(event_dim)
        self.num_classes = int(num_classes)

    def base(self, params: Tensor) -> dist.TorchDistribution:
        return dist.Categorical(logits=params)

    def mean(self, params: Tensor) -> Tensor:
        """The most probable class per position (a categorical has no useful mean)."""
        return params.argmax(-1)

    def check_data(self, name: str, x: Tensor) -> None:
        if x.is_floating_point() or x.dtype == torch.bool:
            raise TypeError(f"modality {name!r}: Categorical likelihood needs integer class indices, got {x.dtype}")
        if bool((x < 0).any()) or bool((x >= self.num_classes).any()):
            raise ValueError(f"modality {name!r}: class indices must lie in [0, {self.num_classes})")

    def config(self) -> dict:
        return {**super().config(), "num_classes": self.num_classes}
