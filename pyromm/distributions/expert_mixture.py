"""A uniform mixture of arbitrary experts over one latent, sampled stratified by batch position."""
from __future__ import annotations

from typing import Sequence

import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import Distribution, constraints


class ExpertMixture(dist.TorchDistribution):
    r"""q_b(z) = 1/|O_b| Σ_{m∈O_b} q_{m,b}(z) for experts q_m of any family (Gaussian, flow, ...) over one latent.

    ``observed`` ``(B, M)`` bool marks the experts of each sample (all without it). ``rsample`` draws from every
    expert and keeps, at batch position b, the draw of expert k_b: the experts observed by sample b take
    consecutive blocks of positions (k_b = the ⌊(b + ½)·|O_b| / B⌋-th observed expert), so gradients reach the
    chosen expert only. ``log_prob`` is the exact mixture density, logsumexp_m [log q_m(z) − log |O_b|].
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, experts: Sequence[Distribution], observed: Tensor | None = None, validate_args=None) -> None:
        experts = list(experts)
        if not experts:
            raise ValueError("a mixture of experts needs at least one expert")
        first = experts[0]
        for i, e in enumerate(experts[1:], 1):
            if e.batch_shape != first.batch_shape or e.event_shape != first.event_shape:
                raise ValueError(
                    f"expert {i} has batch/event shapes {tuple(e.batch_shape)}/{tuple(e.event_shape)}, expert 0 "
                    f"{tuple(first.batch_shape)}/{tuple(first.event_shape)}; the experts must share them"
                )
        if len(first.batch_shape) != 1:
            raise ValueError(f"experts must have batch shape (B,), got {tuple(first.batch_shape)}")
        n = first.batch_shape[0]
        if observed is None:
            observed = torch.ones(n, len(experts), dtype=torch.bool)
        self.experts, self.observed = experts, observed
        super().__init__(first.batch_shape, first.event_shape, validate_args=validate_args)

    @constraints.dependent_property
    def support(self):
        return self.experts[0].support

    def component_index(self, device: torch.device | None = None) -> Tensor:
        """k_b ``(B,)``: the expert position b draws from (see the class docstring)."""
        mask = self.observed if device is None else self.observed.to(device)
        observed = mask.long()
        n = observed.shape[0]
        twice_b_plus_one = 2 * torch.arange(n, device=observed.device) + 1
        rank = twice_b_plus_one * observed.sum(-1) // (2 * n)  # ⌊(b + ½)·|O_b| / B⌋ in integers: which observed expert
        cumulative = observed.cumsum(-1) - 1
        return ((cumulative == rank.unsqueeze(-1)) & mask).to(torch.uint8).argmax(-1)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        event_dims = len(self.event_shape)
        draws = torch.stack([e.rsample(sample_shape) for e in self.experts], dim=-event_dims - 1)  # (..., B, M, *E)
        chosen = torch.nn.functional.one_hot(self.component_index(draws.device), len(self.experts)).to(draws.dtype)
        return (draws * chosen.reshape(chosen.shape + (1,) * event_dims)).sum(-event_dims - 1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        log_q = torch.stack([e.log_prob(value) for e in self.experts], dim=-1)
        observed = self.observed.to(log_q.device)
        log_q = log_q.masked_fill(~observed, float("-inf"))
        return torch.logsumexp(log_q, -1) - observed.sum(-1).to(log_q.dtype).log()

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) == self.batch_shape:
            return self
        return dist.ExpandedDistribution(self, batch_shape)
