r"""The rate term R(q, p) of an ELBO between a guide distribution q and a model distribution p.

Modes (``rate=``):

* ``'analytic'``: KL(q ‖ p) in closed form (torch's KL registry);
* ``'jensen'``: for a mixture p = Σ_k π_k p_k, the bound Σ_k π_k KL(q ‖ p_k) ≥ KL(q ‖ p) (joint convexity);
  for a mixture q = Σ_k π_k q_k, Σ_k π_k KL(q_k ‖ p) ≥ KL(q ‖ p); the exact KL when neither is a mixture.
  Bounds are registered per pair of distribution types with :func:`register_jensen`, as torch's
  ``register_kl`` registers closed forms;
* ``'selected'``: KL(q_{k(b)} ‖ p) of the component k(b) a stratified mixture q drew for sample b;
* ``'mc'``: log q(z) − log p(z) at the drawn z, an unbiased estimate of KL(q ‖ p).
"""
from __future__ import annotations

from typing import Callable

import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence


RATE_MODES = ("analytic", "jensen", "selected", "mc")

_JENSEN: dict[tuple[type, type], Callable[[Distribution, Distribution], Tensor]] = {}


class RateModeError(ValueError):
    """A rate mode the pair of distributions cannot give; the message names the mode to use instead."""


def check_rate_mode(mode: str) -> str:
    if mode not in RATE_MODES:
        raise ValueError(f"unknown rate mode {mode!r}; choose from {RATE_MODES}")
    return mode


def register_jensen(type_q: type, type_p: type) -> Callable:
    """Decorator registering ``fn(q, p)``, a joint-convexity bound of KL(q ‖ p), for the pair of types."""

    def decorator(fn: Callable[[Distribution, Distribution], Tensor]) -> Callable:
        _JENSEN[type_q, type_p] = fn
        return fn

    return decorator


def _jensen_rule(q: Distribution, p: Distribution) -> Callable | None:
    for tq in type(q).__mro__:
        for tp in type(p).__mro__:
            rule = _JENSEN.get((tq, tp))
            if rule is not None:
                return rule
    return None


def analytic_kl(q: Distribution, p: Distribution) -> Tensor:
    """KL(q ‖ p) in closed form; :class:`RateModeError` naming the mode to use when torch has none."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        instead = "'jensen' (an upper bound) or 'mc'" if _jensen_rule(q, p) is not None else "'mc'"
        raise RateModeError(
            f"no closed-form KL between {_describe(q)} and {_describe(p)}; use rate={instead}"
        ) from None


def jensen_kl(q: Distribution, p: Distribution) -> Tensor:
    """The registered bound of KL(q ‖ p) for a mixture on either side, the exact KL otherwise."""
    rule = _jensen_rule(q, p)
    return analytic_kl(q, p) if rule is None else rule(q, p)


def selected_component_kl(q: Distribution, p: Distribution) -> Tensor:
    """KL(q_{k(b)} ‖ p) of the component k(b) each sample's rsample draws from (stratified mixtures q)."""
    index = getattr(q, "component_index", None)
    if index is None or not getattr(q, "stratified", False):
        raise RateModeError(
            f"rate='selected' needs a stratified mixture posterior, got {_describe(q)}; use rate='analytic' or 'mc'"
        )
    loc, scale = q.component(index())
    return analytic_kl(dist.Normal(loc, scale).to_event(1), p)


def rate(q: Distribution, p: Distribution, mode: str, value: Tensor | None = None) -> Tensor:
    """R(q, p) by ``mode``; ``value`` (the draw z ~ q) is needed for 'mc' only."""
    if mode == "analytic":
        return analytic_kl(q, p)
    if mode == "jensen":
        return jensen_kl(q, p)
    if mode == "selected":
        return selected_component_kl(q, p)
    if mode == "mc":
        return q.log_prob(value) - p.log_prob(value)
    raise ValueError(f"unknown rate mode {mode!r}; choose from {RATE_MODES}")


def _describe(d: Distribution) -> str:
    if isinstance(d, dist.Independent):
        return f"Independent({type(d.base_dist).__name__})"
    if isinstance(d, torch.distributions.MixtureSameFamily):
        return f"MixtureSameFamily({_describe(d.component_distribution)})"
    return type(d).__name__


def _with_component_dim(d: Distribution) -> Distribution:
    """``d``, an Independent Normal or Laplace over the last dimension, with a singleton component dimension
    inserted before its event, so it broadcasts against K mixture components."""
    base = d.base_dist if isinstance(d, dist.Independent) else None
    if base is None or d.reinterpreted_batch_ndims != 1 or _family(base) is None:
        raise RateModeError(
            f"rate='jensen' bounds KL against a mixture for Independent Normal or Laplace distributions over a "
            f"vector, got {_describe(d)}; use rate='mc'"
        )
    family = dist.Normal if _family(base) is torch.distributions.Normal else dist.Laplace
    return family(base.loc.unsqueeze(-2), base.scale.unsqueeze(-2), validate_args=False).to_event(1)


def _weighted(weights: Tensor, kl: Tensor) -> Tensor:
    return torch.where(weights > 0, weights * kl, torch.zeros_like(kl)).sum(-1)


def _family(d: Distribution) -> type | None:
    """Normal or Laplace (torch's or Pyro's, subclasses included) of ``d`` or of its base, else None."""
    base = getattr(d, "base_dist", d)
    return next((f for f in (torch.distributions.Normal, torch.distributions.Laplace) if isinstance(base, f)), None)


def _check_one_family(q: Distribution, components: Distribution) -> None:
    family_q, family_p = _family(q), _family(components)
    if family_q is None or family_q is not family_p:
        raise RateModeError(
            f"rate='jensen' needs the posterior and the mixture components in one family, got {_describe(q)} "
            f"against components {_describe(components)}; use rate='mc'"
        )


@register_jensen(dist.Independent, torch.distributions.MixtureSameFamily)
def _jensen_prior_mixture(q: Distribution, p: torch.distributions.MixtureSameFamily) -> Tensor:
    r"""Σ_k π_k KL(q ‖ p_k) for a mixture prior of Normal or Laplace components."""
    _check_one_family(q, p.component_distribution)
    return _weighted(p.mixture_distribution.probs, kl_divergence(_with_component_dim(q), p.component_distribution))


@register_jensen(torch.distributions.MixtureSameFamily, dist.Independent)
def _jensen_posterior_mixture(q: torch.distributions.MixtureSameFamily, p: Distribution) -> Tensor:
    r"""Σ_k π_k KL(q_k ‖ p) for a mixture posterior of Normal or Laplace components."""
    _check_one_family(p, q.component_distribution)
    return _weighted(q.mixture_distribution.probs, kl_divergence(q.component_distribution, _with_component_dim(p)))


@register_jensen(dist.Independent, dist.MaskedMixture)
def _jensen_masked_mixture(q: Distribution, p: dist.MaskedMixture) -> Tensor:
    r"""Pyro's two-component MaskedMixture: the KL to the component each sample's mask selects (exact)."""
    if _family(p.component0) is None or _family(p.component0) is not _family(p.component1):
        raise RateModeError(
            f"rate='jensen' needs mixture components of one family, got {_describe(p.component0)} and "
            f"{_describe(p.component1)}; use rate='mc'"
        )
    return torch.where(p.mask, analytic_kl(q, p.component1), analytic_kl(q, p.component0))


@register_jensen(dist.Independent, dist.ExpandedDistribution)
def _jensen_expanded(q: Distribution, p: dist.ExpandedDistribution) -> Tensor:
    r"""A mixture that a plate broadcast: the bound against the mixture itself, broadcast to the plate's shape."""
    return jensen_kl(q, p.base_dist).expand(p.batch_shape)
