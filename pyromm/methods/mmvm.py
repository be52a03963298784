"""The MMVM VAE: a VAE per modality under the data-dependent mixture prior h(z_m | X) = α N(0, I) + (1 − α)/M Σ_m'
q_m'(z_m | x_m')."""
from __future__ import annotations

from dataclasses import dataclass

from pyromm.infer import RateELBO
from pyromm.methods.common import build_modalities, rate_option
from pyromm.methods.method import Method, register_method
from pyromm.models import MMVMPrior, MultimodalVAE
from pyromm.options import ConfigError, option
from pyromm.train import Exponential, schedule_from_config


# The MMVM code anneals α over a fixed 150,000 steps (about 59 % of its 400 CelebA epochs); a fixed number of
# epochs anneals short runs too, and does not change when a resumed run trains longer. α is 10^-e after epoch e.
DEFAULT_ANNEAL_EPOCHS = 10


@dataclass(frozen=True)
class MMVMOptions:
    rate: str = rate_option("jensen")
    alpha: float | None = option(None, "a constant weight α in [0, 1] of N(0, I) in the prior; unset: α anneals as "
                                 "alpha_anneal_epochs says")
    alpha_anneal_epochs: int | None = option(None, "α(t) = exp(t/T · ln 1e-10), from 1 to 0 over T = this many "
                                             f"epochs of steps, then 0; unset: {DEFAULT_ANNEAL_EPOCHS}")
    alpha_schedule: dict | None = option(None, "any other α schedule, e.g. {kind = 'linear', init = 1.0, final = 0.0, "
                                         "steps = 500} (pyromm.train.schedules)")


class MMVM(Method):
    name = "mmvm"
    doc = "the MMVM VAE: a VAE per modality under the data-dependent mixture-of-experts prior"
    Options = MMVMOptions

    def model(self, cfg, event_shapes):
        prior = MMVMPrior(cfg.alpha if cfg.alpha is not None else 0.0)
        return MultimodalVAE(build_modalities(cfg, event_shapes), cfg.latent_dim, conditional_prior=prior)

    def elbo(self, cfg):
        return RateELBO(cfg.rate)

    def schedules(self, cfg, steps_per_epoch):
        """β, and α: constant ``alpha``, ``alpha_schedule``, or by default the exponential anneal from 1 to 0 of
        the MMVM authors' code over ``alpha_anneal_epochs`` epochs (default ``DEFAULT_ANNEAL_EPOCHS``)."""
        schedules = super().schedules(cfg, steps_per_epoch)
        if cfg.alpha is not None:
            schedules["alpha"] = cfg.alpha
        elif cfg.alpha_schedule is not None:
            schedules["alpha"] = schedule_from_config(cfg.alpha_schedule)
        else:
            epochs = cfg.alpha_anneal_epochs or DEFAULT_ANNEAL_EPOCHS
            schedules["alpha"] = Exponential(1.0, 0.0, steps=epochs * steps_per_epoch)
        return schedules

    def check(self, cfg):
        given = [name for name in ("alpha", "alpha_anneal_epochs", "alpha_schedule") if getattr(cfg, name) is not None]
        if len(given) > 1:
            raise ConfigError(f"mmvm: set one of alpha, alpha_anneal_epochs and alpha_schedule, not {' and '.join(given)}")
        if cfg.alpha is not None and not 0.0 <= cfg.alpha <= 1.0:
            raise ConfigError(f"alpha must lie in [0, 1], got {cfg.alpha}")
        if cfg.alpha_anneal_epochs is not None and cfg.alpha_anneal_epochs < 1:
            raise ConfigError(f"alpha_anneal_epochs must be >= 1, got {cfg.alpha_anneal_epochs}")
        if cfg.alpha_schedule is not None:
            try:
                schedule_from_config(cfg.alpha_schedule)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"alpha_schedule: {err}") from None


register_method(MMVM())
