r"""MultiVae's JNF subset sampler as a subset-sampler callable (docs/reference_differences.md, row 14).

For a subset S of 2..M−1 modalities, the target is log π_S(z) = Σ_{m∈S} log q_m(z | x_m) − log p(z) (the prior
divided once), one chain per sample, started at a draw of a random member's **base** Gaussian N(μ_m, σ_m²)
(not pushed through its flow), then ``mcmc_steps`` HMC transitions of ``n_lf`` leapfrog steps of fixed size
``eps``, identity mass, no adaptation; the draw is the final state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pyro.distributions as dist
import torch

from pyromm.data.batch import MultimodalBatch
from pyromm.infer.hmc import reference_hmc
from pyromm.infer.subset_posterior import SubsetTarget


@dataclass(frozen=True)
class ReferenceSubsetHMC:
    """The sampler of the module docstring; draws on the global RNG of the batch's device, in this order: the
    member index of every sample (``torch.randint``), the base noise ε of every member ``(|S|, B, D)``
    (``torch.randn``; init = μ_m + σ_m ε_m for the chosen m), then ``reference_hmc``'s momenta and uniforms."""

    mcmc_steps: int = 100
    n_lf: int = 10
    eps: float = 0.01

    def __post_init__(self) -> None:
        if self.mcmc_steps < 1 or self.n_lf < 1 or not self.eps > 0:
            raise ValueError(
                f"ReferenceSubsetHMC needs mcmc_steps >= 1, n_lf >= 1 and eps > 0; got {self.mcmc_steps}, "
                f"{self.n_lf}, {self.eps}"
            )

    def init(self, target: SubsetTarget) -> torch.Tensor:
        """Initial states ``(B, D)``: a draw of the base Gaussian of a member of S chosen uniformly per sample."""
        bases = [target.posteriors[m].base.base_dist for m in target.posteriors]
        loc = torch.stack([b.loc for b in bases])  # (|S|, B, D)
        scale = torch.stack([b.scale for b in bases]).expand_as(loc)
        choice = torch.randint(len(bases), loc.shape[1:2], device=loc.device)
        draws = loc + scale * torch.randn(loc.shape, dtype=loc.dtype, device=loc.device)
        return torch.gather(draws, 0, choice[None, :, None].expand(1, *loc.shape[1:]))[0]

    def __call__(self, model, batch: MultimodalBatch, subset: Sequence[str]) -> dist.Empirical:
        """π_S of each sample as the empirical distribution of its one final state: batch ``(B,)``, event ``(D,)``."""
        target = SubsetTarget.from_model(model, batch, subset, prior_power="once")
        z = reference_hmc(target, self.init(target), self.mcmc_steps, self.n_lf, self.eps).detach()
        samples = z.unsqueeze(-2)  # (B, 1, D)
        return dist.Empirical(samples, torch.zeros(samples.shape[:-1], dtype=samples.dtype, device=samples.device))
