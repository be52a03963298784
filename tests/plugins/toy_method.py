"""A method added in one file: independent VAEs under a N(0, s² I) prior, s the option ``prior_scale``."""
from dataclasses import dataclass

import pyro.distributions as dist
import torch

from pyromm.infer import RateELBO
from pyromm.methods import Method, register_method
from pyromm.methods.common import build_modalities
from pyromm.models import MultimodalVAE
from pyromm.options import ConfigError, option


@dataclass(frozen=True)
class ScaledPriorOptions:
    prior_scale: float = option(1.0, "s, the standard deviation of the N(0, s² I) prior")


class ScaledPrior:
    """p(z_m) = N(0, s² I) for every modality."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, posteriors, batch, hyper):
        loc = next(iter(posteriors.values())).base_dist.loc
        return dist.Normal(torch.zeros_like(loc), torch.full_like(loc, self.scale)).to_event(1)

    def __repr__(self) -> str:
        return f"ScaledPrior(scale={self.scale})"


class ScaledPriorVAEs(Method):
    name = "toy_scaled_prior"
    doc = "independent VAEs under a N(0, s² I) prior"
    Options = ScaledPriorOptions

    def model(self, cfg, event_shapes):
        modalities = build_modalities(cfg, event_shapes)
        return MultimodalVAE(modalities, cfg.latent_dim, conditional_prior=ScaledPrior(cfg.prior_scale))

    def elbo(self, cfg):
        return RateELBO("analytic")

    def check(self, cfg):
        if not cfg.prior_scale > 0:
            raise ConfigError(f"prior_scale must be > 0, got {cfg.prior_scale}")


register_method(ScaledPriorVAEs())
