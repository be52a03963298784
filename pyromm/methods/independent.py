"""Independent VAEs: one VAE per modality with a N(0, I) prior each."""
from __future__ import annotations

from dataclasses import dataclass

from pyromm.infer import RateELBO
from pyromm.methods.common import build_modalities, rate_option
from pyromm.methods.method import Method, register_method
from pyromm.models import MultimodalVAE, standard_normal


@dataclass(frozen=True)
class IndependentOptions:
    rate: str = rate_option("analytic")


class Independent(Method):
    name = "independent"
    doc = "independent VAEs, one per modality, each with a N(0, I) prior"
    Options = IndependentOptions

    def model(self, cfg, event_shapes):
        return MultimodalVAE(build_modalities(cfg, event_shapes), cfg.latent_dim, conditional_prior=standard_normal)

    def elbo(self, cfg):
        return RateELBO(cfg.rate)


register_method(Independent())
