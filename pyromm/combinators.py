r"""Guide combinators: joint guide programs built from unimodal guide programs.

A unimodal guide is a Pyro program ``guide_m(batch, hyper)`` that samples the latent site ``site`` (default
``"z"``) from q_m(z | x_m) inside ``pyro.plate("data", B)`` — pyromm's encoders, or a user's own, a normalizing
flow say. A combinator runs each unimodal guide of a modality in the batch, reads q_m from the site's
distribution in its trace (its own draw is discarded), aggregates the q_m over each sample's observed
modalities with :mod:`pyromm.aggregation` underneath, and samples ``site`` from the aggregate, scaled by β:

* :func:`product_of_experts`: PoE (diagonal Gaussian experts), optionally with the N(0, I) prior expert;
* :func:`average`: AVG (diagonal Gaussian experts);
* :func:`mixture_of_experts`: MoE, stratified by batch position; experts of any family (flows included);
* :func:`mixture_of_products`: MoPoE (diagonal Gaussian experts).

The unimodal guides' parameters (``pyro.module``/``pyro.param``) stay visible to SVI and the trainer.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch.distributions import Distribution

from pyromm import aggregation
from pyromm.data.batch import MultimodalBatch
from pyromm.distributions import ExpertMixture
from pyromm.models.base import scaled

Guide = Callable[..., object]


class CombinedGuide:
    """A joint guide program: ``aggregate`` over the distributions the unimodal ``guides`` give ``site``."""

    def __init__(
        self,
        aggregate: Callable[[Mapping[str, Distribution], Mapping | None], Distribution],
        guides: Mapping[str, Guide],
        site: str = "z",
        gaussian_experts: bool = True,
    ) -> None:
        if not guides:
            raise ValueError("a guide combinator needs at least one unimodal guide")
        self.aggregate, self.guides, self.site = aggregate, dict(guides), site
        self.gaussian_experts = gaussian_experts

    def experts(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> dict[str, Distribution]:
        """q_m of every modality of the batch that has a unimodal guide, read from each guide's trace."""
        out = {}
        for name, guide in self.guides.items():
            if name not in batch.data:
                continue
            tracer = poutine.trace(guide)
            poutine.block(tracer, hide_fn=lambda msg: msg["type"] == "sample")(batch, hyper)
            nodes = tracer.trace.nodes
            if self.site not in nodes or nodes[self.site]["type"] != "sample":
                raise KeyError(
                    f"the unimodal guide of modality {name!r} samples no site {self.site!r} "
                    f"(its sites: {[n for n, s in nodes.items() if s['type'] == 'sample']})"
                )
            q = nodes[self.site]["fn"]
            if self.gaussian_experts and not _diagonal_gaussian(q):
                raise TypeError(
                    f"the expert of modality {name!r} at site {self.site!r} is {type(q).__name__}; this combinator "
                    "multiplies or averages diagonal Gaussians (Normal(loc, scale).to_event(1)); use "
                    "mixture_of_experts for experts of other families"
                )
            out[name] = q
        if not out:
            raise KeyError(f"no modality of the batch {batch.modalities} has a unimodal guide ({sorted(self.guides)})")
        return out

    def __call__(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None):
        joint = self.aggregate(self.experts(batch, hyper), batch.mask)
        beta = 1.0 if hyper is None else hyper.get("beta", 1.0)
        with pyro.plate("data", batch.batch_size), scaled(beta):
            return pyro.sample(self.site, joint)


def product_of_experts(guides: Mapping[str, Guide], site: str = "z", prior_expert: bool = False) -> CombinedGuide:
    """PoE of the unimodal guides' diagonal Gaussians (with N(0, I) as an extra expert if ``prior_expert``)."""
    return CombinedGuide(partial(aggregation.product_of_experts, prior_expert=prior_expert), guides, site)


def average(guides: Mapping[str, Guide], site: str = "z") -> CombinedGuide:
    """AVG of the unimodal guides' diagonal Gaussians."""
    return CombinedGuide(aggregation.average, guides, site)


def mixture_of_products(guides: Mapping[str, Guide], site: str = "z", prior_expert: str = "full") -> CombinedGuide:
    """MoPoE of the unimodal guides' diagonal Gaussians over every non-empty subset of the modalities."""
    return CombinedGuide(
        partial(aggregation.mixture_of_products, prior_expert=prior_expert, modalities=tuple(guides)), guides, site
    )


def mixture_of_experts(guides: Mapping[str, Guide], site: str = "z") -> CombinedGuide:
    """MoE of the unimodal guides' distributions, of any family: the diagonal-Gaussian mixture of
    :func:`pyromm.aggregation.mixture_of_experts` when every expert is one, else :class:`ExpertMixture`."""
    return CombinedGuide(_mixture_of_any_experts, guides, site, gaussian_experts=False)


def _mixture_of_any_experts(experts: Mapping[str, Distribution], mask: Mapping | None) -> Distribution:
    if all(_diagonal_gaussian(q) for q in experts.values()):
        return aggregation.mixture_of_experts(experts, mask)
    first = next(iter(experts.values()))
    full = torch.ones(first.batch_shape, dtype=torch.bool)
    observed = [
        full if mask is None or mask.get(name) is None else mask[name].to(full.device) for name in experts
    ]
    return ExpertMixture(list(experts.values()), torch.stack(observed, dim=-1))


def _diagonal_gaussian(q: Distribution) -> bool:
    return isinstance(q, dist.Independent) and isinstance(q.base_dist, torch.distributions.Normal) and (
        q.reinterpreted_batch_ndims == 1
    )
