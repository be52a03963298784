"""Priors over per-modality latents, as functions of the unimodal posteriors and the batch.

A conditional prior is called as ``prior(posteriors, batch, hyper)`` and returns one distribution used for
every modality's latent, or a dict of them keyed by modality (``pyromm.models.ConditionalPrior``).
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import pyro.distributions as dist
from torch import Tensor

from pyromm.data.batch import MultimodalBatch
from pyromm.distributions import DiagNormalMixture


def standard_normal(
    posteriors: Mapping[str, dist.Independent], batch: MultimodalBatch, hyper: Mapping[str, float] | None = None
) -> dist.Independent:
    """p(z) = N(0, I), shaped like the posteriors."""
    loc = next(iter(posteriors.values())).base_dist.loc
    zeros = torch.zeros_like(loc)
    return dist.Normal(zeros, torch.ones_like(loc)).to_event(1)


class MMVMPrior:
    r"""The MMVM data-dependent prior h(z | X) = α N(0, I) + (1 − α) · 1/|O| Σ_{m' ∈ O} q_{m'}(z | x_{m'}).

    O is the set of modalities observed for each sample (all of them without a mask). α is read from
    ``hyper['alpha']`` when the trainer schedules it, else from ``alpha``. α = 0 is the pure MMVM prior,
    α = 1 gives independent VAEs.
    """

    def __init__(self, alpha: float = 0.0) -> None:
        self.alpha = check_alpha(alpha)

    def __call__(
        self, posteriors: Mapping[str, dist.Independent], batch: MultimodalBatch, hyper: Mapping[str, float]
    ) -> DiagNormalMixture:
        alpha = check_alpha(hyper.get("alpha", self.alpha))
        locs = torch.stack([q.base_dist.loc for q in posteriors.values()], dim=-2)
        scales = torch.stack([q.base_dist.scale for q in posteriors.values()], dim=-2)
        log_w = observed_log_weights(posteriors, batch, locs) + _log(1.0 - alpha)
        locs = torch.cat([locs, torch.zeros_like(locs[..., :1, :])], dim=-2)
        scales = torch.cat([scales, torch.ones_like(scales[..., :1, :])], dim=-2)
        log_w = torch.cat([log_w, torch.full_like(log_w[..., :1], _log(alpha))], dim=-1)
        return DiagNormalMixture(locs, scales, log_w)

    def __repr__(self) -> str:
        return f"MMVMPrior(alpha={self.alpha})"


def observed_log_weights(posteriors: Mapping[str, dist.Independent], batch: MultimodalBatch, locs: Tensor) -> Tensor:
    """Uniform mixture weights over each sample's observed modalities: log(1/|O_b|) for observed
    components, -inf for masked ones; shape ``(B, M)``. ``locs`` is the ``(B, M, D)`` stack of posterior means."""
    masks = [batch.observed(name) for name in posteriors]
    if all(m is None for m in masks):
        return torch.full(locs.shape[:-1], -math.log(len(masks)), dtype=locs.dtype, device=locs.device)
    observed = torch.stack(
        [torch.ones(locs.shape[0], dtype=torch.bool, device=locs.device) if m is None else m for m in masks], dim=-1
    ).to(locs.dtype)
    return observed.log() - observed.sum(-1, keepdim=True).log()


def check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return alpha


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf
