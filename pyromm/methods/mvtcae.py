"""MVTCAE: the total-correlation objective of Hwang et al., with its α weighting."""
from __future__ import annotations

from dataclasses import dataclass

from pyromm.infer import RateELBO
from pyromm.methods.common import build_modalities
from pyromm.methods.method import Method, register_method
from pyromm.models import MVTCAE as MVTCAEModel
from pyromm.options import ConfigError, option


@dataclass(frozen=True)
class MVTCAEOptions:
    alpha: float = option(0.1, "α in [0, 1]: the weight (1 − α) of the joint rate against α of the conditional "
                          "rates")


class MVTCAE(Method):
    name = "mvtcae"
    doc = "MVTCAE (Hwang et al.): the multi-view total-correlation objective"
    Options = MVTCAEOptions

    def model(self, cfg, event_shapes):
        return MVTCAEModel(build_modalities(cfg, event_shapes), cfg.latent_dim, cfg.alpha)

    def elbo(self, cfg):
        return RateELBO("analytic")

    def check(self, cfg):
        if not 0.0 <= cfg.alpha <= 1.0:
            raise ConfigError(f"alpha must lie in [0, 1], got {cfg.alpha}")


register_method(MVTCAE())
