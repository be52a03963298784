"""MMVAE: a mixture of the unimodal experts trained with the stratified importance-weighted bound."""
from __future__ import annotations

from dataclasses import dataclass

from pyromm.infer import StratifiedIWAE
from pyromm.methods.common import build_modalities
from pyromm.methods.method import Method, register_method
from pyromm.models import MMVAE as MMVAEModel
from pyromm.options import ConfigError, option


@dataclass(frozen=True)
class MMVAEOptions:
    num_importance_samples: int = option(10, "K, importance samples per sample and stratum")
    estimator: str = option("dreg", "the gradient estimator of the bound: doubly reparameterised or plain IWAE",
                            choices=("dreg", "iwae"))


class MMVAE(Method):
    name = "mmvae"
    doc = "MMVAE (Shi et al.): mixture of experts, the looser stratified IWAE bound"
    Options = MMVAEOptions

    def model(self, cfg, event_shapes):
        return MMVAEModel(build_modalities(cfg, event_shapes), cfg.latent_dim, learn_prior=True)

    def elbo(self, cfg):
        # its programs nest one plate, 'data': no trial run to find it
        return StratifiedIWAE(cfg.num_importance_samples, cfg.estimator, "looser", max_plate_nesting=1)

    def check(self, cfg):
        if cfg.num_importance_samples < 1:
            raise ConfigError(f"num_importance_samples (K) must be >= 1, got {cfg.num_importance_samples}")


register_method(MMVAE())
