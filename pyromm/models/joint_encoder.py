"""A joint encoder q(z | X) next to the unimodal encoders q_m(z | x_m): the model of JMVAE and TELBO."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import pyro.distributions as dist
from torch import Tensor, nn

from pyromm.data.batch import MultimodalBatch
from pyromm.models.base import at_least_float32, check_subset
from pyromm.models.modality import Modality
from pyromm.models.shared_vae import SharedLatentVAE


class JointEncoder(nn.Module):
    r"""q(z | X) = N(μ(X), diag exp(lv(X))) with [μ, lv] from the concatenated per-modality embeddings.

    h = MLP([head_1(x_1); …; head_M(x_M)]) (Linear-ReLU blocks of widths ``hidden``), μ = W_μ h, lv = W_lv h:
    MultiVae's MultipleHeadJointEncoder (512-512 by default). ``heads[m]`` maps ``(N, *event_shape_m)`` to
    ``(N, embedding_dims[m])``; the embeddings are concatenated in the order of ``heads``.
    """

    def __init__(
        self,
        heads: Mapping[str, nn.Module],
        embedding_dims: Mapping[str, int],
        latent_dim: int,
        hidden: Sequence[int] = (512, 512),
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a joint encoder needs at least one head")
        if set(embedding_dims) != set(heads):
            raise ValueError(f"embedding_dims names {sorted(embedding_dims)} but the heads are {sorted(heads)}")
        self.heads = nn.ModuleDict(heads)
        self.embedding_dims = {name: int(embedding_dims[name]) for name in heads}
        self.hidden = [int(h) for h in hidden]
        sizes = [sum(self.embedding_dims.values()), *self.hidden]
        self.body = nn.Sequential(
            *[layer for n_in, n_out in zip(sizes[:-1], sizes[1:]) for layer in (nn.Linear(n_in, n_out), activation())]
        )
        self.loc = nn.Linear(sizes[-1], latent_dim)
        self.log_var = nn.Linear(sizes[-1], latent_dim)

    def forward(self, data: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(loc, log_var)``, each ``(N, latent_dim)``, from ``data[m]`` of every head's modality."""
        embeddings = []
        for name, head in self.heads.items():
            if name not in data:
                raise KeyError(f"the joint encoder needs modality {name!r}; got {sorted(data)}")
            e = head(data[name])
            if e.shape != (data[name].shape[0], self.embedding_dims[name]):
                raise ValueError(
                    f"head {name!r} returned shape {tuple(e.shape)}, expected (N, {self.embedding_dims[name]})"
                )
            embeddings.append(e)
        h = self.body(torch.cat(embeddings, dim=-1))
        return self.loc(h), self.log_var(h)


class EncoderHead(nn.Module):
    """A unimodal encoder used as a joint-encoder head: x_m ↦ [loc; log_var], of size 2·D."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(self.encoder(x), dim=-1)


class JointEncoderVAE(SharedLatentVAE):
    r"""p(X, z) = N(z; 0, I) Π_m p(x_m | z) with a joint encoder q(z | X) and unimodal encoders q_m(z | x_m).

    The posterior given the modalities S (MultiVae's JMVAE rule), applied per sample to the members of S
    that sample observes: |S| = M → q(z | X) of the joint encoder; |S| = 1 → q_m(z | x_m); otherwise the
    analytic product of the unimodal Gaussians without prior expert, 1/σ² = Σ_{m∈S} 1/σ_m²,
    μ = σ² Σ_{m∈S} μ_m/σ_m². Training needs complete batches (:meth:`require_complete`).

    ``subset_inference``: ``'poe'`` (that rule), ``'hmc'`` (for 1 < |S| < M, :meth:`infer` returns HMC draws of
    π_S ∝ Π_{m∈S} q_m(z | x_m), ``pyromm.infer.subset_sampling.SubsetHMC()``), or a sampler
    ``(model, batch, subset) -> distribution`` such as a configured ``SubsetHMC``.
    """

    def __init__(
        self,
        modalities: Sequence[Modality],
        latent_dim: int,
        joint_encoder: JointEncoder,
        subset_inference: str | Callable = "poe",
    ) -> None:
        super().__init__(modalities, latent_dim, "poe")
        self.subset_sampler = subset_sampler(subset_inference)
        if set(joint_encoder.heads) != set(self.modalities):
            raise ValueError(
                f"joint encoder heads {sorted(joint_encoder.heads)} do not match the modalities {self.modality_names}"
            )
        self.joint_encoder = joint_encoder

    def require_complete(
        self, batch: MultimodalBatch, model_name: str | None = None, names: Sequence[str] | None = None
    ) -> None:
        """ValueError naming ``model_name`` and the first of ``names`` (default: every modality) that the batch
        lacks or masks for some sample."""
        model_name = model_name or type(self).__name__
        for name in self.modality_names if names is None else names:
            if name not in batch.data:
                raise ValueError(
                    f"{model_name} needs complete batches: modality {name!r} is not in the batch "
                    f"(batch has {batch.modalities})"
                )
            observed = batch.observed(name)
            if observed is not None and not bool(observed.all()):
                raise ValueError(
                    f"{model_name} needs complete batches: modality {name!r} is missing for "
                    f"{int((~observed).sum())} samples"
                )

    def joint_posterior(self, batch: MultimodalBatch) -> dist.Independent:
        """q(z | X) = N(μ(X), diag exp(lv(X))) from the joint encoder, ignoring the mask."""
        loc, log_var = (at_least_float32(t) for t in self.joint_encoder(batch.data))
        return dist.Normal(loc, torch.exp(0.5 * log_var), validate_args=False).to_event(1)

    def joint(self, batch: MultimodalBatch, subset: Sequence[str] | None = None) -> dist.Independent:
        """q(z | X_S) by the JMVAE rule (class docstring); S defaults to the modalities of the batch."""
        names = list(batch.data) if subset is None else check_subset(subset, self.modality_names)
        missing = [n for n in names if n not in batch.data]
        if missing:
            raise KeyError(f"modality {missing[0]!r} is not in the batch (batch has {batch.modalities})")
        masks = [m for m in (batch.observed(n) for n in names) if m is not None]
        complete = torch.stack(masks).all(0) if masks else None
        full = complete is None or bool(complete.all())
        everything = set(names) == set(self.modality_names)
        if everything and full:
            return self.joint_posterior(batch)
        posteriors = self.encode(batch)
        if len(names) == 1 and full:
            return posteriors[names[0]]
        product = self.aggregate({n: posteriors[n] for n in names}, batch.mask)
        if not everything:
            return product
        joint = self.joint_posterior(batch).base_dist
        keep = complete.unsqueeze(-1)
        loc = torch.where(keep, joint.loc, product.base_dist.loc)
        scale = torch.where(keep, joint.scale, product.base_dist.scale)
        return dist.Normal(loc, scale, validate_args=False).to_event(1)

    def infer(self, batch: MultimodalBatch, subset: Sequence[str]) -> dist.TorchDistribution:
        """q(z | X_S) by the JMVAE rule; for 1 < |S| < M the subset sampler's draws when one was requested
        (then every sample must observe all of S)."""
        subset = check_subset(subset, self.modality_names)
        if self.subset_sampler is not None and 1 < len(subset) < len(self.modality_names):
            return self.subset_sampler(self, batch.select(subset), subset)
        return super().infer(batch, subset)

    def guide(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """Pyro guide: z ~ q(z | X) of the joint encoder, scaled by β; complete batches only."""
        self.require_complete(batch)
        super().guide(batch, hyper)

    def config(self) -> dict:
        encoder = {"embedding_dims": self.joint_encoder.embedding_dims, "hidden": self.joint_encoder.hidden}
        inference = "poe" if self.subset_sampler is None else repr(self.subset_sampler)
        return {**super().config(), "joint_encoder": encoder, "subset_inference": inference}


def subset_sampler(subset_inference: str | Callable) -> Callable | None:
    """The sampler behind ``subset_inference``: None for ``'poe'``, ``SubsetHMC()`` for ``'hmc'``, else itself."""
    if callable(subset_inference):
        return subset_inference
    if subset_inference == "poe":
        return None
    if subset_inference == "hmc":
        from pyromm.infer.subset_sampling import SubsetHMC  # imported here: pyromm.infer imports this module

        return SubsetHMC()
    raise ValueError(f"subset_inference must be 'poe', 'hmc' or a sampler, got {subset_inference!r}")
