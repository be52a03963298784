r"""Importance-weighted bounds over the traces of a model and its guide: IWAE and DReG.

For K vectorised particles z_k ~ q(z | x) and per-sample log-weights lw_k = log p(x, z_k) − log q(z_k | x)
(every site's scale and mask applied, summed over the sites and along all but the ``data`` plate):

* IWAE (Burda et al. 2016): L_K = log (1/K) Σ_k exp(lw_k) ≤ log p(x), non-decreasing in K in expectation.
* DReG (Tucker et al. 2019): the surrogate Σ_k stopgrad(w̃_k) lw_k, w̃ = softmax_k(lw), with the guide's
  parameters detached in log q and a hook multiplying the gradient that reaches each z_k by w̃_k again: model
  parameters get Σ_k w̃_k ∇ lw_k, guide parameters Σ_k w̃_k² ∂lw_k/∂z_k ∂z_k/∂φ, an unbiased estimate of ∇L_K
  without its score-function term. Its value is not a bound.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import pyro
import torch
from torch import Tensor
from torch.distributions import Distribution

from pyromm.infer.terms_elbo import TermsELBO
from pyromm.infer.traces import (
    PARTICLE_PLATE,
    SiteError,
    check_pairing,
    data_dim,
    is_factor,
    log_prob,
    per_sample,
    require_rsample,
    run_pair,
    sample_sites,
    term_name,
)


def check_num_particles(K: int) -> int:
    """``K`` as an int, or a ValueError naming K when it is below 1."""
    if isinstance(K, bool) or int(K) != K or K < 1:
        raise ValueError(f"the number of importance samples must be an integer >= 1, got num_particles={K}")
    return int(K)


def iwae_bound(lw: Tensor, mask: Tensor | None = None) -> Tensor:
    """log (1/K_b) Σ_{k kept} exp(lw_k) over dim 0, K_b the number of kept samples (all K without a mask)."""
    if mask is None:
        return torch.logsumexp(lw, 0) - math.log(lw.shape[0])
    mask = mask.expand_as(lw)
    return torch.logsumexp(lw.masked_fill(~mask, -math.inf), 0) - mask.sum(0).to(lw.dtype).log()


def importance_weights(lw: Tensor, mask: Tensor | None = None) -> Tensor:
    """Detached normalised weights w̃_k = exp(lw_k) / Σ_{j kept} exp(lw_j), 0 for samples not kept."""
    with torch.no_grad():
        if mask is not None:
            lw = lw.masked_fill(~mask.expand_as(lw), -math.inf)
        return torch.softmax(lw, 0)


def detach_parameters(d: Distribution) -> Distribution:
    """A shallow copy of ``d`` whose tensors, and those of the distributions it wraps, are detached."""
    out = copy.copy(d)
    for key, value in vars(d).items():
        if isinstance(value, Tensor):
            vars(out)[key] = value.detach()
        elif isinstance(value, Distribution):
            vars(out)[key] = detach_parameters(value)
    return out


def hook_weights(site: dict, weights: Tensor, particle_dim: int) -> None:
    """Multiply every gradient reaching the site's value by ``weights`` ``(K, B)``, aligned to the value's particle
    and ``data`` dimensions (the DReG path weight)."""
    value = site["value"]
    if not value.requires_grad:
        return
    event_dims = len(site["fn"].event_shape)
    batch_dims = value.dim() - event_dims
    shape = [1] * batch_dims
    shape[particle_dim] = weights.shape[0]
    shape[data_dim(site)] = weights.shape[1]
    aligned = weights.reshape(shape + [1] * event_dims)
    value.register_hook(lambda grad: grad * aligned)


class ParticleELBO(TermsELBO):
    r"""Shared machinery of the K-particle bounds: vectorised traces and per-sample log-weights ``(K, B)``."""

    detach_guide = False

    def __init__(self, num_particles: int = 10, max_plate_nesting: int | None = None) -> None:
        super().__init__(num_particles=check_num_particles(num_particles), vectorize_particles=True)
        self.model_plate_nesting = max_plate_nesting

    def particle_traces(self, model: Callable, guide: Callable, args: tuple, kwargs: dict):
        """(model trace, guide trace, particle dim) with K particles along a plate left of every model plate.

        Without ``max_plate_nesting`` the pair runs once, on its first call, to find its plates (the random
        number streams are left untouched)."""
        if self.model_plate_nesting is None:
            self.model_plate_nesting = _plate_nesting(model, guide, args, kwargs)
        dim = -self.model_plate_nesting - 1
        plate = lambda: pyro.plate(PARTICLE_PLATE, self.num_particles, dim=dim)  # noqa: E731
        model_trace, guide_trace = run_pair(model, guide, args, kwargs, plate)
        check_pairing(model_trace, guide_trace)
        require_rsample(guide_trace, type(self).__name__)
        for name, site in sample_sites(guide_trace):
            if getattr(site["fn"], "stratified", False):
                raise SiteError(
                    f"{type(self).__name__} needs i.i.d. particles of q, but guide site {name!r} is a stratified "
                    "mixture whose draws at a batch position all come from one component; build the aggregate with "
                    "stratified=False"
                )
        return model_trace, guide_trace, dim

    def site_log_weights(self, model_trace, guide_trace, dim: int):
        """Yield (term name, stratum, per-sample log-weight contribution ``(K, B)``, guide site or None)."""
        for name, site in sample_sites(model_trace):
            if site["infer"].get("rate_of") is not None:
                raise SiteError(
                    f"model site {name!r} is a posterior-to-posterior rate term; importance weighting needs "
                    "log p(x, z) − log q(z | x) only, so train this model with RateELBO"
                )
            _require_data_plate(site, name, type(self).__name__)
            kind = "rate" if not site["is_observed"] else ("factor" if is_factor(site) else "rec")
            yield term_name(name, kind), site["infer"].get("stratum"), per_sample(site, log_prob(site), dim), None
        for name, site in sample_sites(guide_trace):
            _require_data_plate(site, name, type(self).__name__)
            fn = detach_parameters(site["fn"]) if self.detach_guide else site["fn"]
            lq = per_sample(site, log_prob(site, fn), dim)
            yield term_name(name, "rate"), site["infer"].get("stratum"), -lq, site

    def log_weights(self, model, guide, args, kwargs):
        """(lw ``(K, B)``, detached per-term sums, reparameterised guide sites, particle dim)."""
        model_trace, guide_trace, dim = self.particle_traces(model, guide, args, kwargs)
        lw, terms, sites = 0.0, {}, []
        for key, _, value, guide_site in self.site_log_weights(model_trace, guide_trace, dim):
            lw = lw + value
            term = -value.detach().mean(0).sum()
            terms[key] = terms.get(key, 0.0) + term
            if guide_site is not None:
                sites.append(guide_site)
        return lw, terms, sites, dim


class IWAE(ParticleELBO):
    r"""loss = −Σ_b log (1/K) Σ_k exp(lw_bk): the importance-weighted bound with K vectorised particles.

    K = 1 is the single-sample ELBO. β and other site scales enter lw as in every Pyro ELBO (β = 1 gives the
    IWAE bound of log p(x)). Terms: ``rec/<m>`` and ``rate/<m>`` averaged over the particles, and ``iwae``.
    """

    def terms(self, model, guide, *args, **kwargs) -> tuple[Tensor, dict[str, Tensor]]:
        lw, terms, _, _ = self.log_weights(model, guide, args, kwargs)
        bound = iwae_bound(lw)
        terms["iwae"] = bound.detach().sum()
        return -bound.sum(), terms


class DReG(ParticleELBO):
    r"""loss = −Σ_b Σ_k w̃_bk lw_bk with log q at detached guide parameters and the w̃ hook on every guide
    draw: the doubly reparameterised gradient of the IWAE bound. ``terms['iwae']`` logs the bound itself."""

    detach_guide = True

    def terms(self, model, guide, *args, **kwargs) -> tuple[Tensor, dict[str, Tensor]]:
        lw, terms, sites, dim = self.log_weights(model, guide, args, kwargs)
        weights = importance_weights(lw)
        for site in sites:
            hook_weights(site, weights, dim)
        terms["iwae"] = iwae_bound(lw.detach()).sum()
        return -(weights * lw).sum(), terms


def _require_data_plate(site: dict, name: str, objective: str) -> None:
    if data_dim(site) is None:
        raise SiteError(
            f"{objective} weights each data point, but site {name!r} is outside the 'data' plate; put every "
            "sample site inside pyro.plate('data', B)"
        )


def _plate_nesting(model: Callable, guide: Callable, args: tuple, kwargs: dict) -> int:
    """The number of vectorised plates nested in the model and guide, from one run of the pair."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), pyro.poutine.block():
        model_trace, guide_trace = run_pair(model, guide, args, kwargs)
    dims = [
        frame.dim
        for trace in (model_trace, guide_trace)
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return -min(dims) if dims else 0
