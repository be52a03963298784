r"""JNF and JNF-Shared (Senellart & Allassonnière 2025): a joint-encoder VAE whose unimodal posteriors are
encoder Gaussians pushed through normalizing flows (``docs/objectives.md``, JNF).

    log q_m(z | x_m) = log N(f_m(z; c_m); μ_m(h_m), diag σ_m²(h_m)) + log |det ∂f_m(z; c_m)/∂z|,

with h_m = x_m (JNF) or h_m = g_m(x_m), the projection of a pretrained, frozen projector (JNF-Shared), and
c_m = [μ_m; σ_m] for a context-conditioned flow (none for the reference's unconditional f_m).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from nflows.transforms import Transform

from pyromm.data.batch import MultimodalBatch
from pyromm.distributions.flows import FlowConfigError, FlowPosterior, flow_context_features, flow_dim
from pyromm.models.base import check_subset
from pyromm.models.joint_encoder import JointEncoder, JointEncoderVAE
from pyromm.models.modality import Modality


class ProjectedEncoder(nn.Module):
    """x_m ↦ encoder(g_m(x_m)): a unimodal encoder reading the embedding of a projector g_m (JNF-Shared)."""

    def __init__(self, projector: nn.Module, encoder: nn.Module) -> None:
        super().__init__()
        self.projector = projector
        self.encoder = encoder

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(self.projector(x))


class UnimodalFlowPosterior(FlowPosterior):
    r"""q_m(z | x_m) = (f_m^{-1})_# N(μ_m, σ_m²), represented by ``mean`` := f_m^{-1}(μ_m; c_m).

    E[z] has no closed form under a flow; the latent representation the evaluation reads as ``.mean`` is the
    image of the base mean (the mean itself for an identity flow), one deterministic inverse pass.
    """

    @property
    def mean(self) -> Tensor:
        u = self.base.mean
        z, _ = self.transform.inverse(u.reshape(-1, u.shape[-1]), self._flat_context(u.shape[:-1]))
        return z.reshape(u.shape)


class JNF(JointEncoderVAE):
    r"""p(X, z) = N(z; 0, I) Π_m p(x_m | z), joint encoder q(z | X) and flow posteriors q_m(z | x_m).

    ``flows[m]``: an nflows flow z ↦ u on R^D (e.g. ``pyromm.distributions.maf``), unconditional or with
    ``context_features = 2·D`` (context c_m = [μ_m; σ_m]). Unimodal encoders wrapped in a
    :class:`ProjectedEncoder` make the model JNF-Shared (``projectors``).

    Posterior given the modalities S, every sample observing all of S: |S| = M → q(z | X); |S| = 1 → q_m(z | x_m);
    otherwise ``subset_sampler(model, batch, S)``, e.g. a ``pyromm.infer.SubsetHMC`` on
    log π_S(z) = Σ_{m∈S} log q_m(z | x_m) − log p(z) (``pyromm.run.jnf_subset_sampler`` gives the reference's).

    Programs: ``model``/``guide`` with α = 0, the joint ELBO of the first stage (:class:`JointEncoderVAE`), and
    ``flow_fit_model``/``flow_fit_guide``, the second stage: z ~ q(z | X) of the frozen joint encoder, drawn
    without gradient, observed under each q_m (site ``z|<m>``), so that under any pyromm ELBO the loss is
    Σ_m −log q_m(z | x_m), i.e. Σ_m KL(q(z | X) ‖ q_m(z | x_m)) up to the joint entropy.
    """

    def __init__(
        self,
        modalities: Sequence[Modality],
        latent_dim: int,
        joint_encoder: JointEncoder,
        flows: Mapping[str, Transform],
        subset_sampler: Callable[..., dist.TorchDistribution],
    ) -> None:
        if not callable(subset_sampler):
            raise TypeError(
                "JNF needs a subset sampler (model, batch, subset) -> distribution for its posteriors given "
                f"1 < |S| < M modalities, e.g. pyromm.methods.jnf.default_jnf_sampler(); got {subset_sampler!r}"
            )
        super().__init__(modalities, latent_dim, joint_encoder, subset_inference=subset_sampler)
        names = [m.name for m in modalities]
        if set(flows) != set(names):
            extra, missing = sorted(set(flows) - set(names)), sorted(set(names) - set(flows))
            raise ValueError(f"JNF needs one flow per modality {names}: missing {missing}, unknown {extra}")
        for name, flow in flows.items():
            dim, context = flow_dim(flow), flow_context_features(flow)
            if dim != latent_dim:
                raise FlowConfigError(f"modality {name!r}: the flow acts on dimension {dim}, the latent on {latent_dim}")
            if context is not None and context != 2 * latent_dim:
                raise FlowConfigError(
                    f"modality {name!r}: the flow takes a context of {context} features; the context [μ; σ] of the "
                    f"encoder Gaussian has {2 * latent_dim}"
                )
        self.flows = nn.ModuleDict({name: flows[name] for name in names})

    @property
    def projectors(self) -> dict[str, nn.Module]:
        """g_m of every modality whose unimodal encoder is a :class:`ProjectedEncoder`."""
        return {name: e.projector for name, e in self.encoders.items() if isinstance(e, ProjectedEncoder)}

    def encode(self, batch: MultimodalBatch) -> dict[str, UnimodalFlowPosterior]:
        """q_m(z | x_m) for each modality in the batch: the encoder Gaussian pushed through f_m^{-1}."""
        posteriors = {}
        for name, base in super().encode(batch).items():
            flow = self.flows[name]
            context = None
            if flow_context_features(flow) is not None:
                context = torch.cat([base.base_dist.loc, base.base_dist.scale], dim=-1)
            posteriors[name] = UnimodalFlowPosterior(base, flow, context, validate_args=False)
        return posteriors

    def joint(self, batch: MultimodalBatch, subset: Sequence[str] | None = None) -> dist.TorchDistribution:
        """The posterior given ``subset`` (default: the modalities of the batch) by the rule of the class docstring."""
        names = list(batch.data) if subset is None else check_subset(subset, self.modality_names)
        self.require_complete(batch, f"JNF's posterior given {names}", names)
        if set(names) == set(self.modality_names):
            return self.joint_posterior(batch)
        if len(names) == 1:
            return self.encode(batch.select(names))[names[0]]
        return self.subset_sampler(self, batch.select(names), names)

    def infer(self, batch: MultimodalBatch, subset: Sequence[str]) -> dist.TorchDistribution:
        """q(z | X_S): the joint encoder, a flow posterior, or the subset sampler's draws (class docstring)."""
        return self.joint(batch, check_subset(subset, self.modality_names))

    def flow_fit_model(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """z ~ q(z | X) of the joint encoder without gradient, observed under q_m(z | x_m) (site ``z|<m>``) for
        every modality m; complete batches only."""
        self.require_complete(batch)
        self.register()
        with torch.no_grad():
            z = self.joint_posterior(batch).sample()
        with pyro.plate("data", batch.batch_size):
            for name, q_m in self.encode(batch).items():
                pyro.sample(f"z|{name}", q_m, obs=z)

    def flow_fit_guide(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """Samples nothing: the second stage's only draw is the model's, from the frozen joint encoder."""
        self.register()

    def config(self) -> dict:
        flows = {name: {"context_features": flow_context_features(f)} for name, f in self.flows.items()}
        return {**super().config(), "flows": flows, "projected": sorted(self.projectors)}
