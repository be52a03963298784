r"""Importance-weighted bounds from log-weights ``lw`` of shape ``(K, *batch)``: IWAE and DReG.

For K samples z_k ~ q(z | X) with log-weights lw_k = log p(X, z_k) − log q(z_k | X):

* IWAE (Burda et al. 2016): L_K = log (1/K) Σ_k exp(lw_k) ≤ log p(X), non-decreasing in K in expectation.
* DReG (Tucker et al. 2019): the surrogate Σ_k stopgrad(w̃_k) lw_k, w̃ = softmax_k(lw), with the posterior
  parameters detached in log q and a hook multiplying the gradient that reaches z_k by w̃_k again. Its
  gradient is an unbiased estimate of ∇L_K (for an i.i.d., fully reparameterised q): decoder and prior
  parameters θ get Σ_k w̃_k ∇_θ lw_k, encoder parameters φ get Σ_k w̃_k² ∂lw_k/∂z_k ∂z_k/∂φ, with no
  score-function term. Its value is not a bound.

An optional bool ``mask`` (broadcastable to ``lw``) keeps only the samples where it is True: the mean runs
over those (a column with no sample kept is undefined).
"""
from __future__ import annotations

import copy
import math
from typing import Mapping

import torch
from torch import Tensor
from torch.distributions import Distribution

from pyromm.data.batch import MultimodalBatch
from pyromm.infer.objective import ObjectiveOutput
from pyromm.infer.shared_elbo import reconstruction


def check_num_samples(K: int) -> int:
    """``K`` as an int, or a ValueError naming K when it is below 1."""
    if int(K) != K or K < 1:
        raise ValueError(f"the number of importance samples K must be an integer >= 1, got K={K}")
    return int(K)


def iwae_bound(lw: Tensor, mask: Tensor | None = None) -> Tensor:
    """log (1/K_b) Σ_{k kept} exp(lw_k) over dim 0, K_b the number of kept samples (all K without a mask)."""
    if mask is None:
        return torch.logsumexp(lw, 0) - math.log(lw.shape[0])
    mask = mask.expand_as(lw)
    return torch.logsumexp(lw.masked_fill(~mask, -math.inf), 0) - mask.sum(0).to(lw.dtype).log()


def importance_weights(lw: Tensor, mask: Tensor | None = None) -> Tensor:
    """Detached normalised weights w̃_k = exp(lw_k) / Σ_{j kept} exp(lw_j), 0 for samples not kept."""
    with torch.no_grad():
        if mask is not None:
            lw = lw.masked_fill(~mask.expand_as(lw), -math.inf)
        return torch.softmax(lw, 0)


def dreg_surrogate(lw: Tensor, z: Tensor, mask: Tensor | None = None) -> Tensor:
    """Σ_k w̃_k lw_k over dim 0, registering a hook that multiplies the gradient reaching ``z`` by w̃.

    ``z`` of shape ``(K, *batch, D)`` must be the tensor ``lw`` was computed from, with log q evaluated at
    detached posterior parameters; every gradient reaching ``z`` is rescaled, so use it in this term only.
    """
    weights = importance_weights(lw, mask)
    if z.requires_grad:
        z.register_hook(lambda grad: grad * weights.unsqueeze(-1))
    if mask is not None:
        lw = lw.masked_fill(~mask.expand_as(lw), 0.0)
    return (weights * lw).sum(0)


def detach_parameters(d: Distribution) -> Distribution:
    """A shallow copy of ``d`` whose tensors, and those of the distributions it wraps, are detached."""
    out = copy.copy(d)
    for key, value in vars(d).items():
        if isinstance(value, Tensor):
            vars(out)[key] = value.detach()
        elif isinstance(value, Distribution):
            vars(out)[key] = detach_parameters(value)
    return out


class IWAE:
    r"""loss = −1/B Σ_b log (1/K) Σ_k exp(lw_bk) for a model with one joint posterior (``SharedLatentVAE``).

    z_k ~ q(z | X) = ``model.joint(batch)`` i.i.d. (rsample), and
    lw_k = Σ_m o_bm w_m log p(x_m | z_k) + β (log p(z_k) − log q(z_k | X)), o_bm = 1 where x_m is observed,
    β = ``hyper['beta']`` (default 1; β = 1 gives the IWAE bound). K = 1 is the single-sample ELBO.
    """

    detach_posterior = False

    def __init__(self, K: int = 10) -> None:
        self.K = check_num_samples(K)

    def log_weights(self, model, batch: MultimodalBatch, hyper: Mapping[str, float]) -> tuple[Tensor, Tensor]:
        """lw ``(K, B)`` and the samples z ``(K, B, D)``; log q at detached parameters for DReG."""
        q = model.joint(batch)
        if getattr(q, "stratified", False):
            raise ValueError(
                "importance weighting needs i.i.d. samples of q(z | X), but a stratified mixture draws every "
                "sample of a batch position from one component; build the aggregate with stratified=False"
            )
        z = q.rsample((self.K,))
        log_q = (detach_parameters(q) if self.detach_posterior else q).log_prob(z)
        log_px = -sum(reconstruction(model, batch, z, list(batch.data)).values())
        return log_px + hyper.get("beta", 1.0) * (model.prior(batch).log_prob(z) - log_q), z

    def reduce(self, lw: Tensor, z: Tensor) -> Tensor:
        """The per-sample objective ``(B,)`` from the log-weights."""
        return iwae_bound(lw)

    def __call__(self, model, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        lw, z = self.log_weights(model, batch, hyper)
        loss = -self.reduce(lw, z).mean()
        return ObjectiveOutput(loss, {"iwae": iwae_bound(lw.detach()).mean()})


class DReG(IWAE):
    r"""The doubly reparameterised IWAE gradient: loss = −1/B Σ_b Σ_k w̃_bk lw_bk with the w̃ hook on z.

    lw as :class:`IWAE` with q's parameters detached in log q; the gradient estimates that of the IWAE
    bound without its score-function term. ``terms['iwae']`` logs the IWAE bound of the same samples.
    """

    detach_posterior = True

    def reduce(self, lw: Tensor, z: Tensor) -> Tensor:
        return dreg_surrogate(lw, z)
