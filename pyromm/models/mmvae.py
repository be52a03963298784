r"""MMVAE (Shi et al. 2019): Laplace experts, their uniform mixture as the joint posterior, and a stratified
importance-weighted bound in which every decoder reconstructs from every modality's samples.

Model: p(z) = Laplace(0, softmax(ℓ_p)·D), p(X | z) = Π_m p(x_m | z); unimodal posteriors
q_m(z | x_m) = Laplace(μ_m, softmax(ℓ_m)·D + 1e-6); joint posterior the uniform mixture of experts
q(z | X) = 1/|O| Σ_{m∈O} q_m(z | x_m) over the observed modalities O.

The programs hold one stratum per source modality r (sites with ``infer={"stratum": r}``): the guide draws
``z@r`` ~ q_r(z | x_r) and scores it under the whole mixture q(z | X) (a
:class:`~pyromm.distributions.MixtureStratum`); the model scores ``z@r`` under p(z) and every observed x_d
under p(x_d | z_r) (sites ``x_<d>@r``, scaled by λ_d). With K draws per source the log-weights are

    lw_{r,k} = log p(z_{r,k}) + Σ_{d∈O} λ_d log p(x_d | z_{r,k}) − log q(z_{r,k} | X),

and :class:`pyromm.infer.StratifiedIWAE` averages the per-source IWAE or DReG estimators over r ∈ O
(``bound='looser'``) or pools all (r, k) (``'tight'``); see ``docs/objectives.md``. A source r that sample b
does not observe is masked out of every site of its stratum (its draws are still made). β is not used, as in
the reference code.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.util import is_validation_enabled
from torch import Tensor, nn

from pyromm.data.batch import MultimodalBatch
from pyromm.distributions.stratum import MixtureStratum
from pyromm.models.base import observed_only
from pyromm.models.modality import Modality
from pyromm.models.shared_vae import SharedLatentVAE


def observed_matrix(
    names: Sequence[str], mask: Mapping[str, Tensor | None] | None, batch_size: int, device: torch.device
) -> Tensor:
    """``(B, M)`` bool, True where modality ``names[m]`` of sample b is observed; ValueError for a sample with none
    under Pyro validation (a host sync; the Trainer's ``validate=False`` skips it)."""
    full = torch.ones(batch_size, dtype=torch.bool, device=device)
    columns = [full if mask is None or mask.get(n) is None else mask[n].to(device) for n in names]
    observed = torch.stack(columns, dim=-1)
    if not is_validation_enabled():
        return observed
    empty = (~observed.any(-1)).nonzero().flatten()
    if len(empty):
        raise ValueError(f"sample {int(empty[0])} has every modality of {list(names)} masked")
    return observed


def laplace_mixture(
    posteriors: Mapping[str, dist.Independent], mask: Mapping[str, Tensor | None] | None = None
) -> dist.TorchDistribution:
    r"""q(z | X_S) = 1/|S ∩ O_b| Σ_{m ∈ S ∩ O_b} q_m(z | x_m) of Laplace experts of batch shape ``(B,)``.

    A single expert without a mask is returned as is; otherwise a ``MixtureSameFamily`` whose masked
    components have weight 0 (and placeholder parameters 0/1).
    """
    names = list(posteriors)
    first = posteriors[names[0]]
    observed = observed_matrix(names, mask, first.batch_shape[0], first.base_dist.loc.device)
    if len(names) == 1 and (mask is None or mask.get(names[0]) is None):
        return first
    keep = observed.unsqueeze(-1)
    locs = torch.stack([posteriors[n].base_dist.loc for n in names], dim=-2)
    scales = torch.stack([posteriors[n].base_dist.scale for n in names], dim=-2)
    components = dist.Laplace(torch.where(keep, locs, 0.0), torch.where(keep, scales, 1.0)).to_event(1)
    return dist.MixtureSameFamily(dist.Categorical(logits=observed.to(locs.dtype).log()), components)


class MMVAE(SharedLatentVAE):
    r"""MMVAE: Laplace experts q_m = Laplace(μ_m, softmax(ℓ_m)·D + 1e-6), their uniform mixture as q(z | X_S),
    and the prior p(z) = Laplace(0, softmax(ℓ_p)·D), ℓ_p = 0 at start (unit scales), learnt iff ``learn_prior``.

    ``model``/``guide`` are the stratified programs of the module docstring; train them with
    :class:`pyromm.infer.StratifiedIWAE`.
    """

    def __init__(self, modalities: Sequence[Modality], latent_dim: int, learn_prior: bool = True) -> None:
        super().__init__(modalities, latent_dim, aggregation=laplace_mixture, posterior="laplace")
        self.learn_prior = bool(learn_prior)
        self.prior_logits = nn.Parameter(torch.zeros(latent_dim), requires_grad=self.learn_prior)

    @property
    def prior_scale(self) -> Tensor:
        """softmax(ℓ_p)·D, the prior's per-dimension Laplace scale."""
        return torch.softmax(self.prior_logits, -1) * self.latent_dim

    def prior(self, batch: MultimodalBatch) -> dist.Independent:
        """p(z) = Laplace(0, softmax(ℓ_p)·D) for every sample of the batch."""
        scale = self.prior_scale.expand(batch.batch_size, -1)
        return dist.Laplace(torch.zeros_like(scale), scale).to_event(1)

    def sample_prior(self, n: int) -> Tensor:
        """n draws z ~ Laplace(0, softmax(ℓ_p)·D), shape ``(n, D)``, on the model's device."""
        scale = self.prior_scale.detach()
        return dist.Laplace(torch.zeros_like(scale), scale).sample((n,))

    def model(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """Per source r (stratum r, masked where x_r is missing): z@r ~ p(z); x_d@r ~ p(x_d | z@r) for every d,
        scaled by λ_d and masked where x_d is missing."""
        pyro.module("pyromm_vae", self)
        with pyro.plate("data", batch.batch_size):
            for r in batch.data:
                with observed_only(batch.observed(r)):
                    z = pyro.sample(f"z@{r}", self.prior(batch), infer={"stratum": r})
                    self.observe(batch, z, list(batch.data), f"@{r}", stratum=r)

    def guide(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """Per source r (stratum r, masked where x_r is missing): z@r ~ q_r(z | x_r), scored by q(z | X)."""
        pyro.module("pyromm_vae", self)
        posteriors = self.encode(batch)
        mixture = laplace_mixture(posteriors, batch.mask)
        with pyro.plate("data", batch.batch_size):
            for r, q_r in posteriors.items():
                with observed_only(batch.observed(r)):
                    pyro.sample(f"z@{r}", MixtureStratum(mixture, q_r), infer={"stratum": r})

    def config(self) -> dict:
        return {**super().config(), "learn_prior": self.learn_prior}
