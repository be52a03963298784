r"""Laplace and Normal observation models with one fixed scalar scale over a whole event.

torch's ``Laplace(loc, scale)`` and ``Normal(loc, scale)`` broadcast the scale to the size of ``loc`` and
evaluate it per element; with one scale b for every element the log-density of an event of n elements folds
into a single sum and a constant:

    Laplace: log p(x) = −(1/b) Σ_i |x_i − μ_i| − n log 2b
    Normal:  log p(x) = −(1/2σ²) Σ_i (x_i − μ_i)² − n (log σ + ½ log 2π)

The same numbers (up to rounding) in fewer full-size kernels, forward and backward. Everything else
(``mean``, ``sample``, ``rsample``, ``base_dist``) is that of ``Independent(Laplace | Normal, event_dim)``.
"""
from __future__ import annotations

import math

import torch
import pyro.distributions as dist
from torch import Tensor


class _FixedScale(dist.Independent):
    """``Independent(base, event_dim)`` for a base of one scalar scale, with a folded ``log_prob``."""

    base_class: type[dist.TorchDistribution]

    def __init__(self, loc: Tensor, scale: float, event_dim: int, validate_args: bool | None = None) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.fixed_scale = float(scale)
        base = self.base_class(loc, torch.full((), self.fixed_scale, dtype=loc.dtype, device=loc.device))
        super().__init__(base, event_dim, validate_args=validate_args)

    def _event_sum(self, elementwise: Tensor) -> Tensor:
        dims = tuple(range(-self.reinterpreted_batch_ndims, 0))
        return elementwise.sum(dims) if dims else elementwise

    def expand(self, batch_shape, _instance=None) -> "_FixedScale":
        loc = self.base_dist.loc.expand(torch.Size(batch_shape) + self.event_shape)
        return type(self)(loc, self.fixed_scale, self.reinterpreted_batch_ndims, validate_args=False)


class FixedScaleLaplace(_FixedScale):
    r"""Laplace(x; μ, b) over the last ``event_dim`` dimensions: log p(x) = −(1/b) Σ_i |x_i − μ_i| − n log 2b."""

    base_class = dist.Laplace

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        b = self.fixed_scale
        return self._event_sum((value - self.base_dist.loc).abs()) * (-1.0 / b) - self.event_shape.numel() * math.log(2 * b)


class FixedScaleNormal(_FixedScale):
    r"""N(x; μ, σ²) over the last ``event_dim`` dimensions: log p(x) = −(1/2σ²) Σ_i (x_i − μ_i)² − n (log σ + ½ log 2π)."""

    base_class = dist.Normal

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        s = self.fixed_scale
        constant = self.event_shape.numel() * (math.log(s) + 0.5 * math.log(2 * math.pi))
        return self._event_sum((value - self.base_dist.loc).square()) * (-0.5 / s**2) - constant
