"""Finite mixtures of diagonal Gaussians with per-sample weights."""
from __future__ import annotations

import torch
import pyro.distributions as dist
from pyro.distributions import constraints
from torch import Tensor
from torch.distributions import kl_divergence


class DiagNormalMixture(dist.TorchDistribution):
    r"""p(z) = Σ_k w_k N(z; μ_k, diag σ_k²).

    ``locs`` and ``scales`` have shape ``(*batch, K, D)``, ``log_weights`` ``(*batch, K)`` with
    ``logsumexp = 0``. Weights may be exactly zero (log-weight ``-inf``): that component is ignored.
    ``log_prob`` is computed as a logsumexp, so it is stable for far-apart components.
    """

    arg_constraints = {"locs": constraints.real, "scales": constraints.positive}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, locs: Tensor, scales: Tensor, log_weights: Tensor, validate_args: bool | None = None) -> None:
        if locs.shape != scales.shape or locs.shape[:-1] != log_weights.shape:
            raise ValueError(
                f"mixture shapes disagree: locs {tuple(locs.shape)}, scales {tuple(scales.shape)}, "
                f"log_weights {tuple(log_weights.shape)} (expected (*batch, K, D), (*batch, K, D), (*batch, K))"
            )
        self.locs, self.scales, self.log_weights = locs, scales, log_weights
        super().__init__(locs.shape[:-2], locs.shape[-1:], validate_args=validate_args)

    @property
    def num_components(self) -> int:
        return self.locs.shape[-2]

    @property
    def components(self) -> dist.Normal:
        """The K components as a Normal of batch shape ``(*batch, K, D)``."""
        return dist.Normal(self.locs, self.scales, validate_args=False)

    def component_log_prob(self, value: Tensor) -> Tensor:
        """log N(z; μ_k, σ_k²) for every component, shape ``(*sample, *batch, K)``."""
        return self.components.log_prob(value.unsqueeze(-2)).sum(-1)

    def log_prob(self, value: Tensor) -> Tensor:
        """log p(z) = logsumexp_k [log w_k + log N(z; μ_k, σ_k²)]."""
        return torch.logsumexp(self.component_log_prob(value) + self.log_weights, dim=-1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            index = dist.Categorical(logits=self.log_weights).sample(sample_shape)
            gather = index[..., None, None].expand(*index.shape, 1, self.locs.shape[-1])
            loc = torch.gather(self.locs.expand(*index.shape, *self.locs.shape[-2:]), -2, gather).squeeze(-2)
            scale = torch.gather(self.scales.expand(*index.shape, *self.scales.shape[-2:]), -2, gather).squeeze(-2)
            return torch.normal(loc, scale)

    @property
    def weights(self) -> Tensor:
        return self.log_weights.exp()

    @property
    def mean(self) -> Tensor:
        return (self.weights.unsqueeze(-1) * self.locs).sum(-2)

    @property
    def variance(self) -> Tensor:
        w = self.weights.unsqueeze(-1)
        second = (w * (self.scales.pow(2) + self.locs.pow(2))).sum(-2)
        return second - self.mean.pow(2)

    def kl_upper_bound(self, q: dist.Independent) -> Tensor:
        r"""Σ_k w_k KL(q ‖ p_k) ≥ KL(q ‖ Σ_k w_k p_k), for a diagonal Gaussian ``q`` (joint convexity of KL)."""
        base = q.base_dist
        kl = kl_divergence(dist.Normal(base.loc.unsqueeze(-2), base.scale.unsqueeze(-2)), self.components).sum(-1)
        weights = self.weights
        return torch.where(weights > 0, weights * kl, torch.zeros_like(kl)).sum(-1)

    def component_kl_bound(self, p: dist.Independent) -> Tensor:
        r"""Σ_k w_k KL(p_k ‖ p) ≥ KL(Σ_k w_k p_k ‖ p), for a diagonal Gaussian ``p`` (convexity of KL)."""
        base = p.base_dist
        kl = kl_divergence(self.components, dist.Normal(base.loc.unsqueeze(-2), base.scale.unsqueeze(-2))).sum(-1)
        weights = self.weights
        return torch.where(weights > 0, weights * kl, torch.zeros_like(kl)).sum(-1)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        k, d = self.locs.shape[-2:]
        return DiagNormalMixture(
            self.locs.expand(*batch_shape, k, d),
            self.scales.expand(*batch_shape, k, d),
            self.log_weights.expand(*batch_shape, k),
        )
