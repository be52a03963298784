r"""HMC on request for a model's subset posteriors: draws of π_S for every sample of a batch, as a distribution.

For the modalities S observed by every sample of a batch, the target is the ``SubsetTarget`` of the model's
unimodal encoders,

    log π_S(z) = Σ_{m∈S} log q_m(z | x_m) − c · log p(z),

encoded once and sampled by ``batched_hmc`` (all chains of all samples at once). With ``prior_power='none'``
(c = 0) it is the product of experts that JMVAE computes in closed form for Gaussian q_m; the sampler needs only
log q_m, so it also serves non-Gaussian posteriors (Laplace, flows) where no closed form exists.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pyro.distributions as dist
import torch
from torch import Tensor

from pyromm.data.batch import MultimodalBatch
from pyromm.infer.hmc import batched_hmc
from pyromm.infer.subset_posterior import PRIOR_POWERS, SubsetTarget


@dataclass(frozen=True)
class SubsetHMC:
    r"""Batched HMC on π_S of each sample of a batch (``batched_hmc`` with its step-size and mass adaptation).

    ``num_chains`` chains per sample start from draws of random members q_m, m ∈ S; after ``num_warmup``
    adaptation iterations each keeps ``num_samples`` draws of ``num_leapfrog`` leapfrog steps. ``prior_power``
    picks c (``SubsetTarget``). Runs on the global RNG of the batch's device.
    """

    num_samples: int = 100
    num_warmup: int = 200
    num_chains: int = 2
    num_leapfrog: int = 10
    prior_power: str = "none"

    def __post_init__(self) -> None:
        if min(self.num_samples, self.num_chains, self.num_leapfrog) < 1 or self.num_warmup < 0:
            raise ValueError(
                "SubsetHMC needs num_samples, num_chains, num_leapfrog >= 1 and num_warmup >= 0; got "
                f"{self.num_samples}, {self.num_chains}, {self.num_leapfrog}, {self.num_warmup}"
            )
        if self.prior_power not in PRIOR_POWERS:
            raise ValueError(f"prior_power must be one of {PRIOR_POWERS}, got {self.prior_power!r}")

    def draws(self, model, batch: MultimodalBatch, subset: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
        """Draws ``(num_samples, num_chains, B, D)`` of π_S and ``batched_hmc``'s per-draw statistics.

        ``model`` follows the inference contract (``encode``, ``prior``); every sample must observe all of S.
        """
        target = SubsetTarget.from_model(model, batch, subset, self.prior_power)
        init = target.init_from_members(self.num_chains)
        return batched_hmc(target, init, self.num_warmup, self.num_samples, num_leapfrog=self.num_leapfrog)

    def __call__(self, model, batch: MultimodalBatch, subset: Sequence[str]) -> dist.Empirical:
        """π_S of each sample as the empirical distribution of its draws: batch shape ``(B,)``, event ``(D,)``."""
        draws, _ = self.draws(model, batch, subset)
        samples = draws.flatten(0, 1).movedim(0, 1)  # (B, num_samples · num_chains, D)
        return dist.Empirical(samples, torch.zeros(samples.shape[:-1], dtype=samples.dtype, device=samples.device))
