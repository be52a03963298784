"""A joint encoder q(z | X) next to the unimodal encoders q_m(z | x_m): the model of JMVAE and TELBO."""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from pyromm.data.batch import MultimodalBatch
from pyromm.models.base import at_least_float32, check_subset, scaled
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

    Programs (``docs/objectives.md``, JMVAE and TELBO), with a = ``hyper['kl_warmup']`` (default 1) and
    β = ``hyper['beta']``; trained on complete batches only (:meth:`require_complete`):

    * ``model``/``guide``, the joint objective: guide z ~ q(z | X) (site ``z``, scaled by a·β); model z ~ N(0, I)
      (scaled by a·β), for α > 0 each q_m observed at z with ``infer={"rate_of": "z"}`` (site ``z|<m>``, scaled by
      a·α) and x_m ~ p(x_m | z) (site ``x_<m>``, scaled by w_m). Under ``RateELBO('analytic')`` the loss is
      Σ_m w_m (−log p(x_m | z)) + a [β KL(q(z|X) ‖ N(0, I)) + α Σ_m KL(q(z|X) ‖ q_m(z|x_m))]: JMVAE-KL, and
      for α = 0 the joint ELBO of TELBO's and JNF's first stage;
    * ``unimodal_model``/``unimodal_guide``, TELBO's second stage: for each modality its own z_m ~ q_m(z | x_m)
      (site ``z_<m>``, scaled by β) decoded by decoder m only:
      Σ_m w_m (−log p(x_m | z_m)) + β KL(q_m(z|x_m) ‖ N(0, I)).

    The posterior given the modalities S, applied per sample to the members of S that sample observes:
    |S| = M → q(z | X); |S| = 1 → q_m(z | x_m); otherwise the product of the unimodal Gaussians without prior
    expert, 1/σ² = Σ_{m∈S} 1/σ_m², μ = σ² Σ_{m∈S} μ_m/σ_m², or, given a ``subset_inference`` sampler
    ``(model, batch, subset) -> distribution`` (e.g. ``pyromm.infer.SubsetHMC()``), that sampler's draws for
    1 < |S| < M.
    """

    def __init__(
        self,
        modalities: Sequence[Modality],
        latent_dim: int,
        joint_encoder: JointEncoder,
        subset_inference: Callable[..., dist.TorchDistribution] | None = None,
        alpha: float = 0.0,
    ) -> None:
        super().__init__(modalities, latent_dim, "poe")
        if subset_inference is not None and not callable(subset_inference):
            raise TypeError(
                "subset_inference must be None (the product-of-experts rule) or a sampler "
                f"(model, batch, subset) -> distribution such as pyromm.infer.SubsetHMC(), got {subset_inference!r}"
            )
        if isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha (the weight of the unimodal KL terms) must be a finite number >= 0, got {alpha!r}")
        if set(joint_encoder.heads) != set(self.modalities):
            raise ValueError(
                f"joint encoder heads {sorted(joint_encoder.heads)} do not match the modalities {self.modality_names}"
            )
        self.subset_sampler = subset_inference
        self.alpha = float(alpha)
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
                    f"{int((~observed).sum())} samples; keep the complete samples only "
                    "(pyromm.data.complete_only, or train_complete_only=True in a RunConfig)"
                )

    def joint_posterior(self, batch: MultimodalBatch) -> dist.Independent:
        """q(z | X) = N(μ(X), diag exp(lv(X))) from the joint encoder, ignoring the mask."""
        loc, log_var = (at_least_float32(t) for t in self.joint_encoder(batch.data))
        return dist.Normal(loc, torch.exp(0.5 * log_var), validate_args=False).to_event(1)

    def joint(self, batch: MultimodalBatch, subset: Sequence[str] | None = None) -> dist.Independent:
        """q(z | X_S) by the product-of-experts rule (class docstring); S defaults to the modalities of the batch."""
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
        """q(z | X_S) by the product-of-experts rule; for 1 < |S| < M the subset sampler's draws when the model has
        one (then every sample must observe all of S)."""
        subset = check_subset(subset, self.modality_names)
        if self.subset_sampler is not None and 1 < len(subset) < len(self.modality_names):
            return self.subset_sampler(self, batch.select(subset), subset)
        return super().infer(batch, subset)

    def model(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """z ~ N(0, I) scaled by a·β; for α > 0, q_m(z | x_m) observed at z as the rate of ``z`` scaled by a·α;
        x_m ~ p(x_m | z) scaled by w_m."""
        hyper = {} if hyper is None else hyper
        warmup = hyper.get("kl_warmup", 1.0)
        self.register()
        with pyro.plate("data", batch.batch_size):
            with scaled(warmup * hyper.get("beta", 1.0)):
                z = pyro.sample("z", self.prior(batch))
            if self.alpha > 0:
                for name, q_m in self.encode(batch).items():
                    with scaled(warmup * self.alpha):
                        pyro.sample(f"z|{name}", q_m, obs=z, infer={"rate_of": "z"})
            self.observe(batch, z, list(batch.data))

    def guide(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """z ~ q(z | X) of the joint encoder, scaled by a·β; complete batches only."""
        hyper = {} if hyper is None else hyper
        self.require_complete(batch)
        self.register()
        with pyro.plate("data", batch.batch_size), scaled(hyper.get("kl_warmup", 1.0) * hyper.get("beta", 1.0)):
            pyro.sample("z", self.joint_posterior(batch))

    def unimodal_model(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """For each modality m: z_m ~ N(0, I) scaled by β, x_m ~ p(x_m | z_m) scaled by w_m."""
        beta = 1.0 if hyper is None else hyper.get("beta", 1.0)
        self.register()
        prior = self.prior(batch)
        with pyro.plate("data", batch.batch_size):
            for name in batch.data:
                with scaled(beta):
                    z = pyro.sample(f"z_{name}", prior)
                self.observe(batch, z, [name])

    def unimodal_guide(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """For each modality m: z_m ~ q_m(z | x_m), scaled by β; complete batches only."""
        beta = 1.0 if hyper is None else hyper.get("beta", 1.0)
        self.require_complete(batch)
        self.register()
        with pyro.plate("data", batch.batch_size), scaled(beta):
            for name, q_m in self.encode(batch).items():
                pyro.sample(f"z_{name}", q_m)

    def config(self) -> dict:
        encoder = {"embedding_dims": self.joint_encoder.embedding_dims, "hidden": self.joint_encoder.hidden}
        inference = "poe" if self.subset_sampler is None else repr(self.subset_sampler)
        return {**super().config(), "joint_encoder": encoder, "subset_inference": inference, "alpha": self.alpha}
