r"""Reading the terms of an objective from the traces of a model and its guide.

Site conventions (``docs/objectives.md`` states them for a user's own programs):

* an **observed** model site contributes the reconstruction term −log p(x | ·), logged as ``rec/<m>`` for a site
  named ``x_<m>`` (``factor/<name>`` for a ``pyro.factor``);
* a **latent** model site pairs with the guide site of the same name and contributes a rate term R(q, p),
  logged as ``rate/<m>`` for a site named ``z_<m>`` (``rate`` for a site named ``z``);
* a model site observed at a guide site's value with ``infer={"rate_of": "<guide site>"}`` contributes
  R(q, p) between that guide site's distribution q and its own p: a posterior-to-posterior KL such as JMVAE's
  KL(q(z | X) ‖ q_m(z | x_m)) (Pyro's own ELBOs read it as the cross-entropy term −log p(z) only);
* a site with ``infer={"structural": True}`` in both programs is a discrete draw that chooses which terms exist
  (MVAE's random subsets); its model and guide distributions are the same, so it contributes nothing;
* ``infer={"stratum": r}`` groups the sites of one mixture component's samples (MMVAE's per-source terms);
* per-sample quantities run along the plate named ``data``; ``poutine.scale`` (β, weights) and
  ``poutine.mask`` (missing modalities) act as in every Pyro ELBO.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from pyro import poutine
from pyro.distributions import Unit
from pyro.distributions.util import scale_and_mask
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

DATA_PLATE = "data"
PARTICLE_PLATE = "particles"


class SiteError(ValueError):
    """A model/guide pair whose sites cannot give the requested objective; the message names the site."""


def run_pair(
    model: Callable, guide: Callable, args: tuple, kwargs: dict, particle_plate: Any = None
) -> tuple[Trace, Trace]:
    """(model trace, guide trace): the guide run first, the model replayed at the guide's values, both inside
    ``particle_plate`` when given (vectorised particles); the plates' subsample sites left out."""
    if particle_plate is not None:
        model, guide = _inside(particle_plate, model), _inside(particle_plate, guide)
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)


def _inside(plate_factory: Callable, fn: Callable) -> Callable:
    def wrapped(*args, **kwargs):
        with plate_factory():
            return fn(*args, **kwargs)

    return wrapped


def sample_sites(trace: Trace) -> Iterator[tuple[str, dict]]:
    """The sample sites of ``trace`` that carry a term (structural choices left out)."""
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site["infer"].get("structural", False):
            yield name, site


def check_pairing(model_trace: Trace, guide_trace: Trace) -> None:
    """SiteError for a latent model site with no guide site, a guide site the model lacks, or a ``rate_of``
    naming no guide site."""
    guide_names = [n for n, s in sample_sites(guide_trace) if not s["infer"].get("is_auxiliary", False)]
    for name, site in sample_sites(model_trace):
        target = site["infer"].get("rate_of")
        if target is not None and target not in guide_trace.nodes:
            raise SiteError(f"model site {name!r} is a rate of guide site {target!r}, which the guide does not sample")
        if not site["is_observed"] and name not in guide_trace.nodes:
            raise SiteError(
                f"model site {name!r} is latent but the guide has no site {name!r} to pair with it "
                f"(guide sites: {guide_names}); sample {name!r} in the guide or observe it in the model"
            )
    for name in guide_names:
        if name not in model_trace.nodes:
            raise SiteError(
                f"guide site {name!r} has no model site; add {name!r} to the model or mark it "
                "infer={'is_auxiliary': True}"
            )


def require_rsample(guide_trace: Trace, objective: str) -> None:
    """SiteError naming the first latent guide site whose distribution cannot be reparameterised."""
    for name, site in sample_sites(guide_trace):
        if not site["is_observed"] and not site["fn"].has_rsample:
            raise SiteError(
                f"{objective} needs reparameterised guide samples, but guide site {name!r} is a "
                f"{type(site['fn']).__name__} without rsample; use pyro.infer.TraceGraph_ELBO (score-function "
                "gradients) or a reparameterisable guide distribution"
            )


def log_prob(site: dict, fn=None) -> Tensor:
    """log ``fn``(value) (default: the site's own distribution) with the site's scale and mask applied."""
    fn = site["fn"] if fn is None else fn
    return scale_and_mask(fn.log_prob(site["value"]), site["scale"], site["mask"])


def is_factor(site: dict) -> bool:
    return isinstance(site["fn"], Unit)


def term_name(name: str, kind: str) -> str:
    """``rec/<m>`` for ``x_<m>``, ``rate/<m>`` for ``z_<m>``, ``rate`` for ``z``, else ``<kind>/<site name>``."""
    if kind == "rate" and name == "z":
        return "rate"
    for prefix in ("x_", "z_"):
        if name.startswith(prefix) and len(name) > len(prefix):
            return f"{kind}/{name[len(prefix):]}"
    return f"{kind}/{name}"


def per_sample(site: dict, value: Tensor, particle_dim: int | None = None) -> Tensor:
    """``value`` (shaped like the site's batch) summed over every dimension but the particle dimension and the
    ``data`` plate's: ``(K, B)``, ``(B,)``, ``(K,)`` or ``()``."""
    keep = {f.dim for f in site["cond_indep_stack"] if f.name == DATA_PLATE and f.dim is not None}
    if particle_dim is not None:
        keep.add(particle_dim)
    if value.dim() == 0:
        return value
    dims = [d for d in range(-value.dim(), 0) if d not in keep]
    return value.sum(dims) if dims else value


def data_dim(site: dict) -> int | None:
    """The dimension of the ``data`` plate at ``site`` (None outside it)."""
    for frame in site["cond_indep_stack"]:
        if frame.name == DATA_PLATE:
            return frame.dim
    return None
