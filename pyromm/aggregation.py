r"""Joint posteriors over a shared latent z built from unimodal diagonal-Gaussian posteriors.

Every aggregator takes ``posteriors``: a mapping name -> ``Normal(loc, scale).to_event(1)``, all of batch
shape ``(B,)`` and event shape ``(D,)`` (the mapping's order is the expert order), and an optional
``mask``: name -> ``(B,)`` bool tensor, True where the modality is observed. A name missing from the mask,
or mapped to None, is observed for every sample; mask entries for names that are not posteriors are
ignored (so ``batch.mask`` can be passed for any subset of modalities). Masked experts are excluded per
sample; a sample with every expert masked is a ``ValueError`` naming the sample. The result has batch
shape ``(B,)`` and event shape ``(D,)`` and can be used directly as a Pyro guide site.

* :func:`average` (AVG), :func:`product_of_experts` (PoE): a diagonal Gaussian.
* :func:`mixture_of_experts` (MoE), :func:`mixture_of_products` (MoPoE): a :class:`StratifiedMixture`,
  whose ``log_prob`` is the exact mixture density and whose ``rsample`` picks one component per sample
  (stratified by batch position, as the MMVM reference code) and reparameterises within it.
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Literal, Mapping, Sequence

import torch
import pyro.distributions as dist
from pyro.distributions.util import is_validation_enabled
from torch import Tensor

from pyromm.distributions import DiagNormalMixture

Mask = Mapping[str, Tensor | None]
PriorExpert = Literal["full", "none", "all"]
Blocks = Literal["even", "remainder_last"]
BLOCK_RULES = ("even", "remainder_last")


class StratifiedMixture(DiagNormalMixture):
    r"""A :class:`DiagNormalMixture` p_b(z) = Σ_k w_bk N(z; μ_bk, σ_bk²) with a reparameterised sampler.

    ``rsample`` first picks one component k_b per sample, then returns z = μ_{b k_b} + σ_{b k_b} ε,
    ε ~ N(0, I), so gradients reach the chosen component's μ and σ (never the weights).

    * ``stratified=True`` (default): position b of the last batch dimension (size B) takes the quantile
      u_b = (b + ½) / B and k_b = min{k : Σ_{j≤k} w_bj > u_b}, the inverse CDF of its own weights. With
      weights shared along the batch the batch is thus cut into consecutive blocks, block k of about w_k·B
      positions using component k. For K uniform components this is the reference's block rule (blocks of
      B/K) whenever K divides B; otherwise the K−1 or fewer leftover positions are spread over the blocks
      (sizes differ by at most one) instead of all going to the last component. Components of weight zero
      are never chosen. The choice depends only on the position, so every draw of ``sample_shape`` at
      position b uses the same component.
    * ``stratified=False``: k ~ Categorical(w_b) independently for every draw and sample.

    ``blocks`` sets the stratified rule: ``"even"`` (default) is the quantile rule above; ``"remainder_last"``
    is the MMVM reference code's: block k has ⌊B·w_k⌋ positions (to within 1e-4, so B/K counts exactly), in
    component order, and the last component of positive weight also takes the remainder (at B = 128 and three
    uniform components, blocks of 42/42/44 instead of 43/42/43). Both rules agree whenever every B·w_k is an
    integer.

    ``log_prob`` is the exact mixture density (the parent's logsumexp), not that of the chosen component.
    """

    has_rsample = True

    def __init__(
        self,
        locs: Tensor,
        scales: Tensor,
        log_weights: Tensor,
        stratified: bool = True,
        validate_args: bool | None = None,
        blocks: Blocks = "even",
    ) -> None:
        super().__init__(locs, scales, log_weights, validate_args=validate_args)
        self.stratified, self.blocks = stratified, check_blocks(blocks)

    def component_index(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """The component chosen for each sample: shape ``batch_shape`` if stratified, else ``(*sample, *batch)``."""
        if not self.stratified:
            return dist.Categorical(logits=self.log_weights).sample(sample_shape)
        n = self.batch_shape[-1] if self.batch_shape else 1
        log_weights = self.log_weights
        if log_weights.dim() > 1 and not any(log_weights.stride()[:-1]):  # expanded: one row for every sample
            log_weights = log_weights[(0,) * (log_weights.dim() - 1)]
        if self.blocks == "remainder_last":
            cdf = _remainder_last_ends(log_weights, n)
            u = torch.arange(n, dtype=cdf.dtype, device=cdf.device)
        else:
            cdf = log_weights.exp().cumsum(-1)
            cdf = (cdf / cdf[..., -1:]).contiguous()  # last entry exactly 1, so u_b < 1 always finds a component
            u = (torch.arange(n, dtype=cdf.dtype, device=cdf.device) + 0.5) / n
        u = u.expand(self.batch_shape).unsqueeze(-1).contiguous()
        return torch.searchsorted(cdf, u, right=True).squeeze(-1)

    def component(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """(μ_k, σ_k) of the component ``index`` picks per sample, each of shape ``(*index.shape, D)``."""
        k, d = self.locs.shape[-2:]
        gather = index[..., None, None].expand(*index.shape, 1, d)
        loc = torch.gather(self.locs.expand(*index.shape, k, d), -2, gather).squeeze(-2)
        scale = torch.gather(self.scales.expand(*index.shape, k, d), -2, gather).squeeze(-2)
        return loc, scale

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """z = μ_k + σ_k ε with k from :meth:`component_index` and ε ~ N(0, I)."""
        sample_shape = torch.Size(sample_shape)
        loc, scale = self.component(self.component_index(sample_shape))
        eps = torch.randn(self._extended_shape(sample_shape), dtype=loc.dtype, device=loc.device)
        return loc + scale * eps

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def expand(self, batch_shape, _instance=None) -> "StratifiedMixture":
        base = super().expand(batch_shape)
        return StratifiedMixture(base.locs, base.scales, base.log_weights, stratified=self.stratified, blocks=self.blocks)


def check_blocks(blocks: str) -> str:
    """``blocks`` itself if it names a stratified block rule, else a ValueError listing them."""
    if blocks not in BLOCK_RULES:
        raise ValueError(f"blocks must be one of {BLOCK_RULES}, got {blocks!r}")
    return blocks


def _remainder_last_ends(log_weights: Tensor, n: int) -> Tensor:
    """End positions e_k = Σ_{j≤k} ⌊n·w_j⌋ of the blocks, ``(*, K)`` float64, with e_k = n from the last
    component of positive weight on (it takes the remainder)."""
    weights = log_weights.double().exp()
    weights = weights / weights.sum(-1, keepdim=True)
    ends = torch.floor(n * weights + 1e-4).cumsum(-1)
    index = torch.arange(weights.shape[-1], device=weights.device)
    last = torch.where(weights > 0, index, 0).amax(-1, keepdim=True)
    return torch.where(index >= last, float(n), ends).contiguous()


class SubsetProductMixture(StratifiedMixture):
    r"""MoPoE's mixture Σ_k w_bk PoE_k(z), each component the product of a subset of E experts.

    ``expert_locs`` and ``expert_log_precisions`` (log 1/σ_e²) have shape ``(B, E, D)``; ``members`` ``(B, K, E)``
    (or ``(K, E)``, shared by every sample) marks the experts of component k for sample b. Component k:
    log(1/σ_k²) = logsumexp_{e∈k} log(1/σ_e²) and μ_k = Σ_{e∈k} softmax_e(log(1/σ_e²)) μ_e, i.e.
    1/σ_k² = Σ_{e∈k} 1/σ_e² and μ_k = σ_k² Σ_{e∈k} μ_e/σ_e²; all K products are built when it is.
    """

    def __init__(
        self,
        expert_locs: Tensor,
        expert_log_precisions: Tensor,
        members: Tensor,
        log_weights: Tensor,
        stratified: bool = True,
        validate_args: bool | None = None,
        blocks: Blocks = "even",
    ) -> None:
        self.expert_locs, self.expert_log_precisions, self.members = expert_locs, expert_log_precisions, members
        locs, scales = _member_product(expert_locs.unsqueeze(-3), expert_log_precisions.unsqueeze(-3), members)
        shape = (*log_weights.shape, locs.shape[-1])
        super().__init__(locs.expand(shape), scales.expand(shape), log_weights, stratified, validate_args, blocks)


def subsets(names: Sequence[str]) -> list[tuple[str, ...]]:
    """All 2^M − 1 non-empty subsets of ``names`` in itertools order: singletons, then pairs, …, then all."""
    names = list(names)
    if not names:
        raise ValueError("subsets: no modality names given")
    if len(set(names)) != len(names):
        raise ValueError(f"subsets: duplicate modality names in {names}")
    return [s for r in range(1, len(names) + 1) for s in combinations(names, r)]


def average(posteriors: Mapping[str, dist.Independent], mask: Mask | None = None) -> dist.Independent:
    r"""AVG (Hosoya 2018): N(μ, σ²) with μ = 1/|O| Σ_{m∈O} μ_m and σ² = 1/|O| Σ_{m∈O} σ_m², O the observed experts."""
    _, locs, scales, observed = _stack(posteriors, mask)
    observed = observed.to(locs.dtype)
    weights = (observed / observed.sum(-1, keepdim=True)).unsqueeze(-1)
    loc = (weights * locs).sum(-2)
    scale = (weights * scales.pow(2)).sum(-2).sqrt()
    return dist.Normal(loc, scale).to_event(1)


def product_of_experts(
    posteriors: Mapping[str, dist.Independent], mask: Mask | None = None, prior_expert: bool = False
) -> dist.Independent:
    r"""PoE: N(μ, σ²) with 1/σ² = Σ_{m∈O} 1/σ_m² (+ 1 for the N(0, I) prior expert) and μ = σ² Σ_{m∈O} μ_m/σ_m².

    Computed in log-precision space: log(1/σ²) = logsumexp_m(−log σ_m²) and μ = Σ_m softmax_m(−log σ_m²) μ_m.
    """
    _, locs, scales, observed = _stack(posteriors, mask)
    loc, scale = _product(locs, scales, observed, prior_expert)
    return dist.Normal(loc, scale).to_event(1)


def mixture_of_experts(
    posteriors: Mapping[str, dist.Independent],
    mask: Mask | None = None,
    stratified: bool = True,
    blocks: Blocks = "even",
) -> StratifiedMixture:
    r"""MoE: q(z) = 1/|O| Σ_{m∈O} q_m(z), uniform over each sample's observed experts (masked ones get weight 0).

    Sampling is stratified by batch position (see :class:`StratifiedMixture`, whose ``blocks`` rule this
    passes on): without a mask, block k of the batch uses expert k; a sample with masked experts takes the
    same rule over its observed experts only (so its component is always observed).
    """
    _, locs, scales, observed = _stack(posteriors, mask)
    log_weights = _uniform_log_weights(observed, locs.dtype)
    return StratifiedMixture(locs, scales, log_weights, stratified=stratified, blocks=blocks)


def mixture_of_products(
    posteriors: Mapping[str, dist.Independent],
    mask: Mask | None = None,
    prior_expert: PriorExpert = "full",
    family: Sequence[Sequence[str]] | None = None,
    stratified: bool = True,
    blocks: Blocks = "even",
    modalities: Sequence[str] | None = None,
) -> SubsetProductMixture:
    r"""MoPoE: q(z) = 1/|S_b| Σ_{S∈S_b} PoE_S(z), one component per subset S of ``family`` (default :func:`subsets`).

    PoE_S for sample b is the product of the experts in S ∩ O_b (its observed members only). S_b is the set
    of subsets with S ∩ O_b non-empty; the other subsets get weight 0. ``prior_expert`` adds N(0, I) to the
    product of: ``"full"`` only the subset of every modality of the model (MultiVae / original MoPoE),
    ``"none"`` no subset (MMVM reference), ``"all"`` every subset. ``modalities`` lists the model's
    modalities (default: the names of ``posteriors``): conditioned on a strict subset of them, the family
    holds no subset of every modality, so with ``"full"`` no product has the prior expert (q(z | x_m) = q_m).
    Sampling is stratified over the subsets as in :func:`mixture_of_experts` (``blocks`` rule); a sample's
    draw builds only the product of its chosen subset (:class:`SubsetProductMixture`).
    """
    if prior_expert not in ("full", "none", "all"):
        raise ValueError(f"prior_expert must be 'full', 'none' or 'all', got {prior_expert!r}")
    names, locs, scales, observed = _stack(posteriors, mask)
    family = subsets(names) if family is None else _check_family(family, names)
    everything = tuple(names) if modalities is None else _check_modalities(modalities, names)
    membership, with_prior = _membership(tuple(names), tuple(family), prior_expert, everything, locs.device)
    if mask is None or all(mask.get(name) is None for name in names):
        # Nothing masked: one (K, E) membership and uniform weights shared by every sample, so a step costs
        # O(K·E) here, not O(B·K·E) (K = 2^M − 1 for the full family).
        members = torch.cat([membership, with_prior], dim=-1)  # the prior expert last
        present = torch.ones(len(family), dtype=torch.bool, device=locs.device)
        log_weights = _uniform_log_weights(present, locs.dtype).expand(locs.shape[0], -1)
    else:
        observed_members = membership & observed.unsqueeze(-2)  # (B, K, M)
        present = observed_members.any(-1)
        # Subsets without an observed member use all their (placeholder) members: finite, weight 0.
        members = torch.where(present.unsqueeze(-1), observed_members, membership)
        members = torch.cat([members, with_prior.expand(*present.shape, 1)], dim=-1)  # the prior expert last
        log_weights = _uniform_log_weights(present, locs.dtype)
    expert_locs = torch.cat([locs, torch.zeros_like(locs[..., :1, :])], dim=-2)
    log_precisions = -2.0 * scales.log()
    log_precisions = torch.cat([log_precisions, torch.zeros_like(log_precisions[..., :1, :])], dim=-2)
    return SubsetProductMixture(
        expert_locs, log_precisions, members, log_weights, stratified=stratified, blocks=blocks
    )


_MEMBERSHIP: dict[tuple, tuple[Tensor, Tensor]] = {}


def _membership(
    names: tuple[str, ...],
    family: tuple[tuple[str, ...], ...],
    prior_expert: str,
    everything: tuple[str, ...],
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """``(K, M)`` bool, subset k holds modality m, and ``(K, 1)`` bool, subset k's product has the prior expert
    (``"full"``: subset k is all of ``everything``); built once per modalities, family, prior rule, model
    modalities and device (a host-to-device copy), then reused."""
    key = (names, family, prior_expert, everything, device)
    if key not in _MEMBERSHIP:
        membership = torch.tensor([[name in subset for name in names] for subset in family], dtype=torch.bool)
        full = [prior_expert == "all" or (prior_expert == "full" and set(subset) == set(everything)) for subset in family]
        _MEMBERSHIP[key] = membership.to(device), torch.tensor(full, dtype=torch.bool).unsqueeze(-1).to(device)
    return _MEMBERSHIP[key]


def _stack(
    posteriors: Mapping[str, dist.Independent], mask: Mask | None
) -> tuple[list[str], Tensor, Tensor, Tensor]:
    """Names, locs and scales ``(B, M, D)`` and the observed matrix ``(B, M)``.

    Masked entries of locs/scales are replaced by 0/1, so that whatever the encoder produced for a missing
    modality (even NaN) reaches neither the result nor the gradients.
    """
    if not posteriors:
        raise ValueError("no posteriors to aggregate")
    names = list(posteriors)
    shape = None
    for name, q in posteriors.items():
        if not (
            isinstance(q, torch.distributions.Independent)
            and isinstance(q.base_dist, torch.distributions.Normal)
            and len(q.event_shape) == 1
        ):
            raise TypeError(f"posterior {name!r} must be Normal(loc, scale).to_event(1), got {q}")
        if len(q.batch_shape) != 1:
            raise ValueError(f"posterior {name!r} must have batch shape (B,), got {tuple(q.batch_shape)}")
        if shape is None:
            shape = q.batch_shape + q.event_shape
        elif q.batch_shape + q.event_shape != shape:
            raise ValueError(
                f"posterior {name!r} has shape {tuple(q.batch_shape + q.event_shape)}, "
                f"{names[0]!r} has {tuple(shape)}"
            )
    locs = torch.stack([q.base_dist.loc.expand(shape) for q in posteriors.values()], dim=-2)
    scales = torch.stack([q.base_dist.scale.expand(shape) for q in posteriors.values()], dim=-2)
    observed = _observed(names, mask, shape[0], locs.device)
    if observed is None:
        return names, locs, scales, torch.ones(locs.shape[:-1], dtype=torch.bool, device=locs.device)
    keep = observed.unsqueeze(-1)
    return names, torch.where(keep, locs, 0.0), torch.where(keep, scales, 1.0), observed


def _check_family(family: Sequence[Sequence[str]], names: list[str]) -> list[tuple[str, ...]]:
    """``family`` as a list of tuples; ValueError for an empty, unknown-modality or duplicate subset or member."""
    checked = []
    for position, subset in enumerate(family):
        subset = tuple(subset)
        if not subset:
            raise ValueError(f"empty subset at position {position} of the subset family")
        unknown = [name for name in subset if name not in names]
        if unknown:
            raise ValueError(f"unknown modality {unknown[0]!r} in subset {subset}; posteriors have {names}")
        if len(set(subset)) != len(subset):
            raise ValueError(f"duplicate modality in subset {subset}")
        if any(set(subset) == set(other) for other in checked):
            raise ValueError(f"duplicate subset {subset} in the subset family")
        checked.append(subset)
    return checked


def _check_modalities(modalities: Sequence[str], names: list[str]) -> tuple[str, ...]:
    """``modalities`` as a tuple; ValueError when a posterior's name is not among them."""
    modalities = tuple(modalities)
    unknown = [name for name in names if name not in modalities]
    if unknown:
        raise ValueError(f"posterior {unknown[0]!r} is not one of the model's modalities {list(modalities)}")
    return modalities


def _observed(names: list[str], mask: Mask | None, batch_size: int, device: torch.device) -> Tensor | None:
    """The ``(B, M)`` observed matrix, or None when nothing is masked by construction.

    A sample with every expert masked is looked for only under Pyro validation (a host sync); the trainer
    turns validation off, its datasets having no such sample.
    """
    columns = [None if mask is None else mask.get(name) for name in names]
    if all(c is None for c in columns):
        return None
    for name, c in zip(names, columns):
        if c is not None and (c.dtype != torch.bool or tuple(c.shape) != (batch_size,)):
            raise ValueError(
                f"mask[{name!r}] must be a bool tensor of shape ({batch_size},), "
                f"got {c.dtype} {tuple(c.shape)}"
            )
    full = torch.ones(batch_size, dtype=torch.bool, device=device)
    observed = torch.stack([full if c is None else c.to(device) for c in columns], dim=-1)
    if not is_validation_enabled():
        return observed
    empty = (~observed.any(-1)).nonzero().flatten()
    if len(empty):
        raise ValueError(
            f"sample {int(empty[0])} has every expert masked ({len(empty)} such sample(s) in the batch; "
            f"experts {names})"
        )
    return observed


def _member_product(locs: Tensor, log_precisions: Tensor, members: Tensor) -> tuple[Tensor, Tensor]:
    """PoE loc and scale ``(*, D)`` of the experts ``(*, E, D)`` where ``members`` ``(*, E)`` is True."""
    log_precision = torch.where(members.unsqueeze(-1), log_precisions, -math.inf)
    loc = (torch.softmax(log_precision, dim=-2) * locs).sum(-2)
    scale = torch.exp(-0.5 * torch.logsumexp(log_precision, dim=-2))
    return loc, scale


def _product(locs: Tensor, scales: Tensor, members: Tensor, prior_expert: bool) -> tuple[Tensor, Tensor]:
    """PoE loc and scale ``(B, D)`` of the experts where ``members`` ``(B, M)`` is True (+ N(0, I) if ``prior_expert``)."""
    log_precisions = -2.0 * scales.log()
    if prior_expert:
        locs = torch.cat([locs, torch.zeros_like(locs[..., :1, :])], dim=-2)
        log_precisions = torch.cat([log_precisions, torch.zeros_like(log_precisions[..., :1, :])], dim=-2)
        members = torch.cat([members, torch.ones_like(members[..., :1])], dim=-1)
    return _member_product(locs, log_precisions, members)


def _uniform_log_weights(present: Tensor, dtype: torch.dtype) -> Tensor:
    """log(1/n_b) where ``present`` ``(B, K)`` is True, −inf elsewhere, n_b = Σ_k present_bk."""
    present = present.to(dtype)
    return present.log() - present.sum(-1, keepdim=True).log()
