"""JNF and JNF-Shared: a joint encoder and one masked autoregressive flow per modality's posterior; JNF-Shared first
trains projectors shared across modalities (DCCA or InfoNCE)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyromm.distributions import maf
from pyromm.infer import RateELBO, SubsetHMC, jnf_stages
from pyromm.methods.common import build_joint_encoder, build_modalities
from pyromm.methods.method import Method, register_method
from pyromm.models import Modality
from pyromm.models.jnf import JNF as JNFModel
from pyromm.models.jnf import ProjectedEncoder
from pyromm.nn import MLPEncoder, MLPProjector
from pyromm.options import ConfigError, option
from pyromm.reference_sampling import ReferenceSubsetHMC

if TYPE_CHECKING:
    from pyromm.config import RunConfig


@dataclass(frozen=True)
class JNFOptions:
    second_stage_epochs: int | None = option(None, "epochs of the flow stage; unset: half the epochs")
    flow_blocks: int = option(2, "MADE blocks per flow")
    flow_hidden: int = option(128, "hidden units of each MADE block (3 layers)")
    flow_context: bool = option(False, "condition each flow on [μ_m; σ_m] of its unimodal encoder")


@dataclass(frozen=True)
class JNFSharedOptions(JNFOptions):
    projector_epochs: int | None = option(None, "epochs of the projector stage; unset: half of the epochs before "
                                          "the flows")
    projector_objective: str = option("dcca", "how the projectors are trained", choices=("dcca", "infonce"))
    projection_dim: int = option(20, "units of the shared projection")
    temperature: float = option(0.1, "InfoNCE temperature (> 0)")


def default_jnf_sampler() -> SubsetHMC:
    """JNF's posterior given 1 < |S| < M modalities as the reference samples it: batched HMC on
    log π_S = Σ_{m∈S} log q_m(z | x_m) − log p(z), one chain of 100 warm-up transitions of 10 leapfrog steps per
    sample, its final state the draw."""
    return SubsetHMC(num_samples=1, num_warmup=100, num_chains=1, num_leapfrog=10, prior_power="once")


def jnf_stage_epochs(cfg: RunConfig) -> tuple[int, int, int]:
    """(projector, joint, flow) stage epochs, summing to ``epochs``: flows ``second_stage_epochs`` (default
    epochs // 2), projectors (jnf_shared only) ``projector_epochs`` (default half the rest)."""
    flows = cfg.second_stage_epochs or cfg.epochs // 2
    projectors = cfg.projector_epochs or (cfg.epochs - flows) // 2 if cfg.model == "jnf_shared" else 0
    return projectors, cfg.epochs - flows - projectors, flows


def build_jnf(cfg: RunConfig, modalities: list[Modality], subset_sampler=None) -> JNFModel:
    """JNF: a joint encoder on fresh copies of the encoder networks and one MAF per modality (``flow_blocks`` MADE
    blocks of 3 × ``flow_hidden`` units, conditioned on [μ_m; σ_m] with ``flow_context``). jnf_shared replaces each
    unimodal encoder by an MLP on the embedding of an MLP projector to ``projection_dim`` (L2-normalised for the
    'infonce' objective). ``subset_sampler`` (subsets of 2..M−1 modalities) defaults to
    :func:`default_jnf_sampler`, or with ``jnf_subset_sampler='reference'`` to MultiVae's fixed-step sampler."""
    joint_encoder = build_joint_encoder(cfg, modalities)
    if cfg.model == "jnf_shared":
        for m in modalities:
            projector = MLPProjector(
                m.event_shape, cfg.projection_dim, tuple(cfg.hidden), normalize=cfg.projector_objective == "infonce"
            )
            m.encoder = ProjectedEncoder(projector, MLPEncoder(cfg.projection_dim, cfg.latent_dim, tuple(cfg.hidden)))
    context = 2 * cfg.latent_dim if cfg.flow_context else None
    flows = {m.name: maf(cfg.latent_dim, cfg.flow_blocks, cfg.flow_hidden, context_features=context) for m in modalities}
    if subset_sampler is None:
        reference = cfg.setting("jnf_subset_sampler") == "reference"
        subset_sampler = ReferenceSubsetHMC() if reference else default_jnf_sampler()
    return JNFModel(modalities, cfg.latent_dim, joint_encoder, flows, subset_sampler)


class JNF(Method):
    name = "jnf"
    doc = "JNF (Senellart et al.): joint encoder, then a normalising flow per unimodal posterior"
    Options = JNFOptions

    def model(self, cfg, event_shapes):
        return build_jnf(cfg, build_modalities(cfg, event_shapes))

    def elbo(self, cfg):
        return RateELBO("analytic")

    def stages(self, cfg, model):
        projector_epochs, joint_epochs, flow_epochs = jnf_stage_epochs(cfg)
        if self.name == "jnf":
            return jnf_stages(model, joint_epochs, flow_epochs)
        return jnf_stages(model, joint_epochs, flow_epochs, cfg.projector_objective, projector_epochs, cfg.temperature)

    def check(self, cfg):
        if cfg.objective == "pyro":
            raise ConfigError(f"{self.name} trains with its stage objectives; objective 'pyro' does not apply")
        if cfg.second_stage_epochs is not None and not 1 <= cfg.second_stage_epochs < cfg.epochs:
            raise ConfigError(f"second_stage_epochs must lie in 1..epochs-1, got {cfg.second_stage_epochs}")
        for name in ("flow_blocks", "flow_hidden"):
            if getattr(cfg, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
        stages = jnf_stage_epochs(cfg)
        if min(stages[self.name == "jnf":]) < 1:
            extra = f"projector_epochs={cfg.projector_epochs} and " if self.name == "jnf_shared" else ""
            raise ConfigError(
                f"{self.name}: epochs={cfg.epochs}, {extra}second_stage_epochs={cfg.second_stage_epochs} give stages "
                f"of {stages} epochs (projectors, joint, flows); each needs >= 1"
            )


class JNFShared(JNF):
    name = "jnf_shared"
    doc = "JNF-Shared: JNF on the embeddings of projectors first trained to agree across modalities (DCCA or InfoNCE)"
    Options = JNFSharedOptions

    def check(self, cfg):
        super().check(cfg)
        if cfg.projector_epochs is not None and cfg.projector_epochs < 1:
            raise ConfigError(f"projector_epochs must be >= 1, got {cfg.projector_epochs}")
        if cfg.projection_dim < 1:
            raise ConfigError(f"projection_dim must be >= 1, got {cfg.projection_dim}")
        if not cfg.temperature > 0:
            raise ConfigError(f"temperature must be a finite number > 0, got {cfg.temperature}")


register_method(JNF())
register_method(JNFShared())
