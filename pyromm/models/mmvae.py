r"""MMVAE (Shi et al. 2019) as its official code and MultiVae compute it (ALGORITHMS.md §4.1).

Model: p(z) = Laplace(0, softmax(ℓ_p)·D), p(X | z) = Π_m p(x_m | z); unimodal posteriors
q_m(z | x_m) = Laplace(μ_m, softmax(ℓ_m)·D + 1e-6); joint posterior the uniform mixture of experts
q(z | X_S) = 1/|S| Σ_{m∈S} q_m(z | x_m).

Objective, for every modality r and K samples z_{r,k} ~ q_r(z | x_r) (rsample), each decoded by every decoder:

    lw_{r,k} = log p(z_{r,k}) + Σ_d λ_d log p(x_d | z_{r,k}) − log (1/M) Σ_m q̄_m(z_{r,k} | x_m),

q̄ built from detached posterior parameters for DReG and from the live ones for IWAE.

* looser: 1/M Σ_r B_r with B_r = Σ_k w̃_{r,k} lw_{r,k} (DReG, w̃ = softmax_k, hook w̃ on z) or
  log (1/K) Σ_k exp(lw_{r,k}) (IWAE);
* tight: the same estimator over all M·K samples jointly (w̃ = softmax over (r, k); log (1/MK) Σ_{r,k} exp).

Missing modalities (``batch.mask``), with O_b the modalities observed for sample b: the mixture in lw runs
over O_b (masked q̄_m set to −inf, 1/M replaced by 1/|O_b|), λ_d log p(x_d | z) counts only d ∈ O_b, and r
ranges over O_b: looser averages B_r over r ∈ O_b; tight pools the K·|O_b| samples with r ∈ O_b. Samples of a
masked r are still drawn (so the noise of the other modalities does not depend on the mask) but get no weight.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import pyro.distributions as dist
from pyro.distributions.util import is_validation_enabled
from torch import Tensor, nn

from pyromm.data.batch import MultimodalBatch
from pyromm.models.modality import Modality
from pyromm.models.shared_vae import SharedLatentVAE

def observed_matrix(
    names: Sequence[str], mask: Mapping[str, Tensor | None] | None, batch_size: int, device: torch.device
) -> Tensor:
    """``(B, M)`` bool, True where modality ``names[m]`` of sample b is observed; ValueError for a sample with none
    under Pyro validation (a host sync; the trainer turns validation off, its datasets having no such sample)."""
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

    A single expert observed everywhere is returned as is; otherwise a ``MixtureSameFamily`` whose masked
    components have weight 0 (and placeholder parameters 0/1).
    """
    names = list(posteriors)
    first = posteriors[names[0]]
    observed = observed_matrix(names, mask, first.batch_shape[0], first.base_dist.loc.device)
    if len(names) == 1 and bool(observed.all()):
        return first
    keep = observed.unsqueeze(-1)
    locs = torch.stack([posteriors[n].base_dist.loc for n in names], dim=-2)
    scales = torch.stack([posteriors[n].base_dist.scale for n in names], dim=-2)
    components = dist.Laplace(torch.where(keep, locs, 0.0), torch.where(keep, scales, 1.0)).to_event(1)
    return dist.MixtureSameFamily(dist.Categorical(logits=observed.to(locs.dtype).log()), components)


class MMVAE(SharedLatentVAE):
    r"""MMVAE: Laplace experts q_m = Laplace(μ_m, softmax(ℓ_m)·D + 1e-6), their uniform mixture as q(z | X_S),
    and the prior p(z) = Laplace(0, softmax(ℓ_p)·D), ℓ_p = 0 at start (unit scales), learnt iff ``learn_prior``.

    Train it with :class:`MMVAEObjective`; ``model``/``guide`` are the plain Pyro ELBO of the mixture.
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

    def config(self) -> dict:
        return {**super().config(), "learn_prior": self.learn_prior}
