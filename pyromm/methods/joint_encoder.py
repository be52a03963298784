"""JMVAE and TELBO: a joint encoder q(z | X) beside the unimodal encoders."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyromm.infer import RateELBO, telbo_stages
from pyromm.methods.common import build_joint_encoder, build_modalities
from pyromm.methods.method import EventShapes, Method, register_method
from pyromm.models import JointEncoderVAE
from pyromm.options import ConfigError, option
from pyromm.train import EpochWarmup

if TYPE_CHECKING:
    from pyromm.config import RunConfig


@dataclass(frozen=True)
class JMVAEOptions:
    alpha: float = option(0.1, "α in [0, 1]: the weight of the KL terms that pull each q(z | x_m) towards q(z | X)")


@dataclass(frozen=True)
class TELBOOptions:
    second_stage_epochs: int | None = option(None, "epochs of the second stage (the unimodal encoders, the rest "
                                             "frozen); unset: half the epochs")


def joint_encoder_vae(cfg: RunConfig, event_shapes: EventShapes, alpha: float) -> JointEncoderVAE:
    """A :class:`JointEncoderVAE` on the config's networks, α weighting its unimodal KL terms."""
    modalities = build_modalities(cfg, event_shapes)
    return JointEncoderVAE(modalities, cfg.latent_dim, build_joint_encoder(cfg, modalities), alpha=alpha)


class JMVAE(Method):
    name = "jmvae"
    doc = "JMVAE (Suzuki et al.): joint ELBO plus α-weighted KLs from the joint to each unimodal posterior"
    Options = JMVAEOptions

    def model(self, cfg, event_shapes):
        return joint_encoder_vae(cfg, event_shapes, cfg.alpha)

    def elbo(self, cfg):
        return RateELBO("analytic")

    def schedules(self, cfg, steps_per_epoch):
        """β, and with ``kl_warmup_epochs`` JMVAE's per-epoch warm-up a(e) = min(1, e / warmup) of the rate."""
        if not cfg.kl_warmup_epochs:
            return super().schedules(cfg, steps_per_epoch)
        return {"beta": cfg.beta, "kl_warmup": EpochWarmup(1.0, cfg.kl_warmup_epochs)}

    def check(self, cfg):
        if not 0.0 <= cfg.alpha <= 1.0:
            raise ConfigError(f"alpha must lie in [0, 1], got {cfg.alpha}")


class TELBO(Method):
    name = "telbo"
    doc = "TELBO (Vedantam et al.): the joint ELBO, then the unimodal encoders trained with the rest frozen"
    Options = TELBOOptions

    def model(self, cfg, event_shapes):
        return joint_encoder_vae(cfg, event_shapes, 0.0)

    def elbo(self, cfg):
        return RateELBO("analytic")

    def stages(self, cfg, model):
        second = cfg.second_stage_epochs or cfg.epochs // 2
        return telbo_stages(model, cfg.epochs - second, second)

    def check(self, cfg):
        if cfg.second_stage_epochs is not None and not 1 <= cfg.second_stage_epochs < cfg.epochs:
            raise ConfigError(f"second_stage_epochs must lie in 1..epochs-1, got {cfg.second_stage_epochs}")


register_method(JMVAE())
register_method(TELBO())
