"""The shared-latent models: one z for all modalities, q(z | X) an aggregation of the unimodal posteriors (AVG, PoE,
MoE, MoPoE with and without the prior expert)."""
from __future__ import annotations

from dataclasses import make_dataclass

from pyromm.infer import RateELBO
from pyromm.methods.common import build_modalities, rate_option
from pyromm.methods.method import Method, register_method
from pyromm.models import SharedLatentVAE


class SharedLatent(Method):
    """A :class:`SharedLatentVAE` with the aggregation ``aggregation``; with ``rate_scale='modalities'`` the rate
    counts once per modality, as the MMVM authors' baselines do (docs/objectives.md)."""

    def __init__(self, name: str, doc: str, aggregation: str, rate: str, rate_scale: str | float) -> None:
        self.name, self.doc, self.aggregation, self.rate_scale = name, doc, aggregation, rate_scale

        options_name = f"{name.title().replace('_', '')}Options"
        self.Options = make_dataclass(options_name, [("rate", str, rate_option(rate))], frozen=True)

    def model(self, cfg, event_shapes):
        return SharedLatentVAE(
            build_modalities(cfg, event_shapes),
            cfg.latent_dim,
            self.aggregation,
            rate_scale=self.rate_scale,
            blocks=cfg.setting("mixture_blocks"),
        )

    def elbo(self, cfg):
        return RateELBO(cfg.rate)


register_method(SharedLatent("avg", "shared latent, q(z | X) the average of the unimodal Gaussians' parameters (the "
                             "MMVM paper's AVG baseline)", "avg", "analytic", "modalities"))
register_method(SharedLatent("poe", "shared latent, q(z | X) the product of the unimodal experts (the MMVM paper's PoE "
                             "baseline)", "poe", "analytic", "modalities"))
register_method(SharedLatent("moe", "shared latent, q(z | X) the uniform mixture of the unimodal experts (the MMVM "
                             "paper's MoE baseline)", "moe", "selected", "modalities"))
register_method(SharedLatent("mopoe", "shared latent, q(z | X) the mixture of the products of every subset, no prior "
                             "expert (the MMVM paper's MoPoE baseline)", "mopoe_noprior", "selected", "modalities"))
register_method(SharedLatent("mopoe_reference", "MoPoE as MultiVae trains it: the prior expert in every product, the "
                             "rate counted once", "mopoe", "jensen", 1.0))
