"""MMVAE+: MMVAE with modality-private latents beside the shared one."""
from __future__ import annotations

from dataclasses import dataclass

from pyromm.infer import StratifiedIWAE
from pyromm.methods.common import build_modalities
from pyromm.methods.method import Method, register_method
from pyromm.models import MMVAEPlus as MMVAEPlusModel
from pyromm.options import ConfigError, option


@dataclass(frozen=True)
class MMVAEPlusOptions:
    num_importance_samples: int = option(10, "K, importance samples per sample and stratum")
    estimator: str = option("dreg", "'dreg': the doubly reparameterised K-sample bound; 'elbo': the plain ELBO "
                            "(needs K = 1)", choices=("dreg", "elbo"))
    private_dim: int | None = option(None, "units of each modality's private latent; unset: latent_dim")


class MMVAEPlus(Method):
    name = "mmvae_plus"
    doc = "MMVAE+ (Palumbo et al.): shared and modality-private latents, the stratified bound"
    Options = MMVAEPlusOptions

    def model(self, cfg, event_shapes):
        private = cfg.private_dim or cfg.latent_dim
        modalities = build_modalities(cfg, event_shapes, dim=cfg.latent_dim + private)
        return MMVAEPlusModel(modalities, cfg.latent_dim, private, learn_private_prior=True)

    def elbo(self, cfg):
        estimator = "iwae" if cfg.estimator == "elbo" else "dreg"
        detach = cfg.setting("dreg_detach") == "proper"
        return StratifiedIWAE(cfg.num_importance_samples, estimator, "looser", detach, max_plate_nesting=1)

    def check(self, cfg):
        if cfg.num_importance_samples < 1:
            raise ConfigError(f"num_importance_samples (K) must be >= 1, got {cfg.num_importance_samples}")
        if cfg.estimator == "elbo" and cfg.num_importance_samples != 1:
            raise ConfigError("estimator 'elbo' needs num_importance_samples (K) = 1")
        if cfg.private_dim is not None and cfg.private_dim < 1:
            raise ConfigError(f"private_dim must be >= 1, got {cfg.private_dim}")


register_method(MMVAEPlus())
