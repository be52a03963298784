"""The rate term R(q, p) of an ELBO, in its three estimators."""
from __future__ import annotations

import pyro.distributions as dist
from torch import Tensor
from torch.distributions import Distribution, kl_divergence

RATE_MODES = ("analytic", "jensen", "selected", "mc")


def check_rate_mode(mode: str) -> str:
    if mode not in RATE_MODES:
        raise ValueError(f"unknown rate mode {mode!r}; choose from {RATE_MODES}")
    return mode


def analytic_kl(q: Distribution, p: Distribution) -> Tensor:
    """KL(q ‖ p) in closed form from torch's KL registry."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        raise ValueError(
            f"no closed-form KL between {type(q).__name__} and {type(p).__name__}; use rate='mc'"
        ) from None


def jensen_kl(q: Distribution, p: Distribution) -> Tensor:
    """The joint-convexity bound of KL(q ‖ p) when either side is a mixture, the exact KL otherwise.

    Mixture prior p = Σ_k w_k p_k: Σ_k w_k KL(q ‖ p_k) (the MMVM rate). Mixture posterior q = Σ_k w_k q_k:
    Σ_k w_k KL(q_k ‖ p) (MoPoE's subset-averaged KL).
    """
    prior_bound = getattr(p, "kl_upper_bound", None)
    if prior_bound is not None:
        return prior_bound(q)
    posterior_bound = getattr(q, "component_kl_bound", None)
    if posterior_bound is not None:
        return posterior_bound(p)
    return analytic_kl(q, p)


def selected_component_kl(q: Distribution, p: Distribution) -> Tensor:
    """KL(q_{k(b)} ‖ p) of the component k(b) each sample's rsample draws from (stratified mixtures).

    This is what the MMVM reference code optimises for its MoE and MoPoE baselines.
    """
    index = getattr(q, "component_index", None)
    if index is None or not getattr(q, "stratified", False):
        raise ValueError(f"rate='selected' needs a stratified mixture posterior, got {type(q).__name__}")
    loc, scale = q.component(index())
    return analytic_kl(dist.Normal(loc, scale).to_event(1), p)


def monte_carlo_kl(q: Distribution, p: Distribution, z: Tensor) -> Tensor:
    """log q(z) − log p(z) for z ~ q: an unbiased estimate of KL(q ‖ p)."""
    return q.log_prob(z) - p.log_prob(z)


def rate(q: Distribution, p: Distribution, z: Tensor, mode: str) -> Tensor:
    """R(q, p) by ``mode``: 'analytic' KL, 'jensen' mixture bound, 'selected' component KL, or 'mc' at ``z``."""
    if mode == "analytic":
        return analytic_kl(q, p)
    if mode == "jensen":
        return jensen_kl(q, p)
    if mode == "selected":
        return selected_component_kl(q, p)
    if mode == "mc":
        return monte_carlo_kl(q, p, z)
    raise ValueError(f"unknown rate mode {mode!r}; choose from {RATE_MODES}")
