"""Finite mixtures of diagonal Gaussians with per-sample weights, as Pyro's ``MixtureSameFamily``."""
from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor


class DiagNormalMixture(dist.MixtureSameFamily):
    r"""p(z) = Σ_k w_k N(z; μ_k, diag σ_k²): Pyro's ``MixtureSameFamily`` of diagonal Normals, from its parameters.

    ``locs`` and ``scales`` have shape ``(*batch, K, D)``, ``log_weights`` ``(*batch, K)`` with ``logsumexp = 0``.
    Weights may be exactly zero (log-weight ``-inf``): that component is ignored. ``log_prob`` is a logsumexp,
    stable for far-apart components. Being a ``MixtureSameFamily``, it gets the Jensen bounds that
    ``pyromm.infer.rates`` registers for that class (Σ_k w_k KL(q ‖ p_k) as a prior, Σ_k w_k KL(p_k ‖ p) as a
    posterior), like any mixture a user builds with Pyro.
    """

    arg_constraints = {"locs": constraints.real, "scales": constraints.positive}

    def __init__(self, locs: Tensor, scales: Tensor, log_weights: Tensor, validate_args: bool | None = None) -> None:
        if locs.shape != scales.shape or locs.shape[:-1] != log_weights.shape:
            raise ValueError(
                f"mixture shapes disagree: locs {tuple(locs.shape)}, scales {tuple(scales.shape)}, "
                f"log_weights {tuple(log_weights.shape)} (expected (*batch, K, D), (*batch, K, D), (*batch, K))"
            )
        self.locs, self.scales, self.log_weights = locs, scales, log_weights
        super().__init__(
            dist.Categorical(logits=log_weights, validate_args=False),
            dist.Normal(locs, scales, validate_args=False).to_event(1),
            validate_args=validate_args,
        )

    @property
    def num_components(self) -> int:
        return self.locs.shape[-2]

    @property
    def components(self) -> dist.Normal:
        """The K components as a Normal of batch shape ``(*batch, K, D)``."""
        return self.component_distribution.base_dist

    @property
    def weights(self) -> Tensor:
        return self.log_weights.exp()

    def expand(self, batch_shape, _instance=None) -> "DiagNormalMixture":
        batch_shape = torch.Size(batch_shape)
        k, d = self.locs.shape[-2:]
        return DiagNormalMixture(
            self.locs.expand(*batch_shape, k, d),
            self.scales.expand(*batch_shape, k, d),
            self.log_weights.expand(*batch_shape, k),
        )
