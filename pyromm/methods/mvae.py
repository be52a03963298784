"""MVAE: a product of experts with the prior expert, trained on the joint, the unimodal and random subset ELBOs."""
from __future__ import annotations

from dataclasses import dataclass

from pyromm.infer import RateELBO
from pyromm.methods.common import build_modalities, rate_option
from pyromm.methods.method import Method, register_method
from pyromm.models import MVAE as MVAEModel
from pyromm.options import ConfigError, option


@dataclass(frozen=True)
class MVAEOptions:
    rate: str = rate_option("analytic")
    num_random_subsets: int = option(0, "random subsets of modalities whose ELBO is added per step (sub-sampled "
                                     "training)")


class MVAE(Method):
    name = "mvae"
    doc = "MVAE (Wu & Goodman): product of experts with the prior expert; joint, unimodal and random-subset ELBOs"
    Options = MVAEOptions

    def model(self, cfg, event_shapes):
        return MVAEModel(build_modalities(cfg, event_shapes), cfg.latent_dim, cfg.num_random_subsets)

    def elbo(self, cfg):
        return RateELBO(cfg.rate)

    def check(self, cfg):
        if cfg.num_random_subsets < 0:
            raise ConfigError(f"num_random_subsets must be >= 0, got {cfg.num_random_subsets}")


register_method(MVAE())
