r"""The β-ELBO with a choice of rate estimator, for any model/guide pair that follows the site conventions."""
from __future__ import annotations

from pyro.distributions.util import scale_and_mask
from torch import Tensor

from pyromm.infer.rates import check_rate_mode, rate
from pyromm.infer.terms_elbo import TermsELBO
from pyromm.infer.traces import (
    check_pairing,
    is_factor,
    log_prob,
    require_rsample,
    run_pair,
    sample_sites,
    term_name,
)


class RateELBO(TermsELBO):
    r"""loss = Σ_x −log p(x | z) + Σ_z R(q_z, p_z), z ~ q (one reparameterised draw per site).

    Each term carries its site's scale (β, the modality weight w_m, ...) and mask. ``rate`` picks R (see
    :mod:`pyromm.infer.rates`): ``'analytic'`` KL (equal to ``pyro.infer.TraceMeanField_ELBO``), ``'jensen'``
    (the mixture bound; the MMVM rate), ``'selected'`` (the component each sample drew) or ``'mc'``
    (log q(z) − log p(z); equal to ``pyro.infer.Trace_ELBO`` on reparameterised guides). The analytic modes
    scale and mask R by the guide site, as ``TraceMeanField_ELBO`` does; a ``rate_of`` site by its own.
    ``num_particles`` > 1 averages independent draws (run one after another).
    """

    def __init__(self, rate: str = "analytic", num_particles: int = 1) -> None:
        super().__init__(num_particles=num_particles)
        self.rate = check_rate_mode(rate)

    def terms(self, model, guide, *args, **kwargs) -> tuple[Tensor, dict[str, Tensor]]:
        loss, terms = 0.0, {}
        for _ in range(self.num_particles):
            model_trace, guide_trace = run_pair(model, guide, args, kwargs)
            check_pairing(model_trace, guide_trace)
            require_rsample(guide_trace, f"RateELBO(rate={self.rate!r})")
            for key, value in self._site_terms(model_trace, guide_trace):
                value = value.sum() / self.num_particles
                loss = loss + value
                terms[key] = terms.get(key, 0.0) + value.detach()
        return loss, terms

    def _site_terms(self, model_trace, guide_trace):
        for name, site in sample_sites(model_trace):
            target = site["infer"].get("rate_of")
            if target is not None:
                q = guide_trace.nodes[target]
                yield term_name(name, "rate"), self._rate(q["fn"], site, site, name)
            elif site["is_observed"]:
                yield term_name(name, "factor" if is_factor(site) else "rec"), -log_prob(site)
            else:
                yield term_name(name, "rate"), self._rate(guide_trace.nodes[name]["fn"], site, guide_trace.nodes[name], name)
        for name, site in sample_sites(guide_trace):
            if site["infer"].get("is_auxiliary", False):
                yield term_name(name, "entropy"), log_prob(site)

    def _rate(self, q, model_site: dict, scaled_by: dict, name: str) -> Tensor:
        """R(q, p) at ``model_site`` with the scale and mask of ``scaled_by``; 'mc' uses each site's own."""
        if self.rate == "mc":
            if scaled_by is model_site:
                return scale_and_mask(q.log_prob(model_site["value"]), model_site["scale"], model_site["mask"]) - log_prob(model_site)
            return log_prob(scaled_by) - log_prob(model_site)
        try:
            r = rate(q, model_site["fn"], self.rate)
        except ValueError as err:
            raise type(err)(f"site {name!r}: {err}") from None
        return scale_and_mask(r, scaled_by["scale"], scaled_by["mask"])

