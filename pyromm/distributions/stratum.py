r"""One stratum of a mixture: draws from a single component, densities of the whole mixture.

For a mixture q(z) = Σ_r π_r q_r(z), stratified sampling draws z from each component q_r in turn and scores
it under q. ``MixtureStratum(q, q_r)`` is that pair as one distribution, so a guide can sample the stratum r
at a Pyro site whose log-density is the mixture's: z ~ q_r (reparameterised when q_r is), log_prob(z) = log q(z).
"""
from __future__ import annotations

import torch
import pyro.distributions as dist
from torch import Tensor
from torch.distributions import constraints


class MixtureStratum(dist.TorchDistribution):
    r"""Samples of ``component`` q_r scored by ``mixture`` q: ``rsample``/``sample`` draw z ~ q_r and
    ``log_prob(z)`` = log q(z). Batch and event shapes are the mixture's; both distributions must share them."""

    arg_constraints: dict = {}

    def __init__(
        self, mixture: dist.TorchDistribution, component: dist.TorchDistribution, validate_args: bool | None = None
    ) -> None:
        if mixture.batch_shape != component.batch_shape or mixture.event_shape != component.event_shape:
            raise ValueError(
                f"the mixture (batch {tuple(mixture.batch_shape)}, event {tuple(mixture.event_shape)}) and its "
                f"component (batch {tuple(component.batch_shape)}, event {tuple(component.event_shape)}) must "
                "have the same batch and event shapes"
            )
        self.mixture, self.component = mixture, component
        super().__init__(mixture.batch_shape, mixture.event_shape, validate_args=validate_args)

    @property
    def has_rsample(self) -> bool:
        return self.component.has_rsample

    @constraints.dependent_property
    def support(self):
        return self.mixture.support

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """z ~ q_r, reparameterised."""
        return self.component.rsample(sample_shape)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """z ~ q_r, without gradient."""
        return self.component.sample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """log q(z), the whole mixture's log-density."""
        return self.mixture.log_prob(value)

    def expand(self, batch_shape, _instance=None) -> "MixtureStratum":
        batch_shape = torch.Size(batch_shape)
        new = self._get_checked_instance(MixtureStratum, _instance)
        new.mixture = self.mixture.expand(batch_shape)
        new.component = self.component.expand(batch_shape)
        super(MixtureStratum, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new
