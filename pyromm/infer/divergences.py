"""The rate term R(q, p) of an ELBO, in its three estimators."""
from __future__ import annotations

from torch import Tensor
from torch.distributions import Distribution, kl_divergence

RATE_MODES = ("analytic", "jensen", "mc")


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
    """Σ_k w_k KL(q ‖ p_k) for a mixture p = Σ_k w_k p_k (an upper bound of KL(q ‖ p)); exact KL otherwise."""
    upper_bound = getattr(p, "kl_upper_bound", None)
    return upper_bound(q) if upper_bound is not None else analytic_kl(q, p)


def monte_carlo_kl(q: Distribution, p: Distribution, z: Tensor) -> Tensor:
    """log q(z) − log p(z) for z ~ q: an unbiased estimate of KL(q ‖ p)."""
    return q.log_prob(z) - p.log_prob(z)


def rate(q: Distribution, p: Distribution, z: Tensor, mode: str) -> Tensor:
    """R(q, p) by ``mode``: 'analytic' KL, 'jensen' mixture bound, or 'mc' single-sample estimate at ``z``."""
    if mode == "analytic":
        return analytic_kl(q, p)
    if mode == "jensen":
        return jensen_kl(q, p)
    if mode == "mc":
        return monte_carlo_kl(q, p, z)
    raise ValueError(f"unknown rate mode {mode!r}; choose from {RATE_MODES}")
