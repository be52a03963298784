"""The Jensen rate against Pyro's own MixtureSameFamily, by hand: Σ_k π_k KL(q ‖ p_k) and Σ_k π_k KL(q_k ‖ p)."""
from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from pyromm.infer import jensen_kl


@pytest.mark.parametrize("family", [dist.Normal, dist.Laplace])
def test_jensen_bound_of_a_mixture_prior_and_of_a_mixture_posterior_is_the_weighted_kl(family):
    torch.manual_seed(0)
    B, K, D = 4, 3, 2
    q = family(torch.randn(B, D), torch.rand(B, D) + 0.5).to_event(1)
    locs, scales = torch.randn(K, D), torch.rand(K, D) + 0.5
    logits = torch.randn(K)
    mixture = dist.MixtureSameFamily(dist.Categorical(logits=logits), family(locs, scales).to_event(1))
    weights = torch.softmax(logits, -1)
    components = [family(locs[k], scales[k]).to_event(1) for k in range(K)]
    prior_side = sum(weights[k] * kl_divergence(q, components[k]) for k in range(K))
    torch.testing.assert_close(jensen_kl(q, mixture), prior_side)
    p = family(torch.zeros(D), torch.ones(D)).to_event(1)
    posterior_side = sum(weights[k] * kl_divergence(components[k], p) for k in range(K))
    torch.testing.assert_close(jensen_kl(mixture, p), posterior_side.expand(()))
