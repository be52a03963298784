r"""Pretraining of JNF-Shared's projectors g_m on complete batches: deep CCA or pairwise InfoNCE, summed over the
unordered pairs of modalities (``docs/objectives.md``).

:class:`ProjectorPretraining` reads ``model.projectors`` (name → g_m), one projector per modality of the model.
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Mapping

import pyro
import torch
from torch import Tensor
from torch.nn import functional as F

from pyromm.data.batch import MultimodalBatch


def _inverse_sqrt(sigma: Tensor, eps: float) -> Tensor:
    """Σ^{-1/2} = V diag(λ^{-1/2}) Vᵀ over the eigenvalues λ > ``eps`` (the others are dropped)."""
    values, vectors = torch.linalg.eigh(sigma)
    keep = values > eps
    values, vectors = values[keep], vectors[:, keep]
    return vectors @ torch.diag(values.rsqrt()) @ vectors.T


def cca_loss(
    h1: Tensor, h2: Tensor, r1: float = 1e-3, r2: float = 1e-3, top_k: int | None = None, eps: float = 1e-9
) -> Tensor:
    r"""Minus the total canonical correlation of two views ``h1 (N, o1)``, ``h2 (N, o2)``: −Σ_{i≤k} ρ_i.

    On the centred views, Σ₁₂ = H̄₁ᵀH̄₂/(N−1), Σ₁₁ = H̄₁ᵀH̄₁/(N−1) + r₁I, Σ₂₂ = H̄₂ᵀH̄₂/(N−1) + r₂I and
    T = Σ₁₁^{-1/2} Σ₁₂ Σ₂₂^{-1/2} (inverse square roots over the eigenvalues > ``eps``). ρ_i² are the eigenvalues
    of TᵀT + r₁I clamped at ``eps`` (the reference DCCA adds r₁I there too), the ``top_k`` largest kept (all
    by default). With r₁ = r₂ = 0 the ρ_i are the sample canonical correlations.
    """
    if h1.dim() != 2 or h2.dim() != 2 or h1.shape[0] != h2.shape[0] or h1.shape[0] < 2:
        raise ValueError(
            f"CCA needs two views (N, o1), (N, o2) with the same N >= 2, got {tuple(h1.shape)} and {tuple(h2.shape)}"
        )
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    n = h1.shape[0]
    h1, h2 = h1 - h1.mean(0), h2 - h2.mean(0)
    sigma12 = h1.T @ h2 / (n - 1)
    sigma11 = h1.T @ h1 / (n - 1) + r1 * torch.eye(h1.shape[1], dtype=h1.dtype, device=h1.device)
    sigma22 = h2.T @ h2 / (n - 1) + r2 * torch.eye(h2.shape[1], dtype=h2.dtype, device=h2.device)
    t = _inverse_sqrt(sigma11, eps) @ sigma12 @ _inverse_sqrt(sigma22, eps)
    tt = t.T @ t + r1 * torch.eye(t.shape[1], dtype=t.dtype, device=t.device)
    squared = torch.linalg.eigvalsh(tt).clamp_min(eps)
    if top_k is not None:
        squared = squared.topk(min(top_k, squared.shape[0])).values
    return -squared.sqrt().sum()


def info_nce_loss(e1: Tensor, e2: Tensor, temperature: float = 0.1) -> Tensor:
    r"""Symmetric InfoNCE of paired embeddings ``e1, e2 (B, d)``, L2-normalised first.

    With E = [ê₁; ê₂] (2B rows) and s_ab = ê_a·ê_b / τ, each anchor a's positive p(a) is the other view of
    its sample and its candidates are all rows but itself:
    loss = 1/(2B) Σ_a −log( exp(s_{a,p(a)}) / Σ_{k≠a} exp(s_{a,k}) ).
    """
    if e1.dim() != 2 or e1.shape != e2.shape:
        raise ValueError(f"InfoNCE needs two embeddings of the same shape (B, d), got {tuple(e1.shape)}, {tuple(e2.shape)}")
    b = e1.shape[0]
    e = F.normalize(torch.cat([e1, e2]), dim=-1)
    logits = (e @ e.T / temperature).masked_fill(torch.eye(2 * b, dtype=torch.bool, device=e.device), -math.inf)
    positives = torch.arange(2 * b, device=e.device).roll(b)
    return F.cross_entropy(logits, positives)


def projections(model, batch: MultimodalBatch) -> dict[str, Tensor]:
    """g_m(x_m) for every modality of ``model`` (at least two); ValueError naming a modality without projector,
    missing from the batch or masked for some sample."""
    if len(model.modality_names) < 2:
        raise ValueError(f"projector pretraining pairs modalities; the model has only {model.modality_names}")
    model.require_complete(batch, "projector pretraining")
    projectors = model.projectors
    out = {}
    for name in model.modality_names:
        if name not in projectors:
            raise ValueError(f"modality {name!r} has no projector; the model projects {sorted(projectors)}")
        out[name] = projectors[name](batch.data[name])
    return out


PROJECTOR_OBJECTIVES = ("dcca", "infonce")


class ProjectorPretraining:
    r"""Programs whose ELBO is the projectors' loss (``docs/objectives.md``, JNF-Shared).

    ``model`` holds one ``pyro.factor`` per unordered pair of modalities m < m', with log factor
    −B · cca_loss(g_m(x_m), g_{m'}(x_{m'}); r1, r2, top_k, eps) (``objective='dcca'``, sites ``cca/<m>-<m'>``) or
    −B · info_nce_loss(g_m(x_m), g_{m'}(x_{m'}); τ) (``'infonce'``, sites ``nce/<m>-<m'>``), so that an ELBO's loss
    divided by the batch size B (the trainer's loss) is Σ_{m<m'} loss_{m,m'}; ``guide`` samples nothing.
    ``network`` must have a projector g_m (``network.projectors``) for each of its (at least two) modalities.
    """

    def __init__(
        self,
        network,
        objective: str = "dcca",
        temperature: float = 0.1,
        r1: float = 1e-3,
        r2: float = 1e-3,
        top_k: int | None = None,
        eps: float = 1e-9,
    ) -> None:
        if objective not in PROJECTOR_OBJECTIVES:
            raise ValueError(f"unknown projector objective {objective!r}; choose from {PROJECTOR_OBJECTIVES}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        if r1 < 0 or r2 < 0 or not eps > 0:
            raise ValueError(f"DCCA needs r1, r2 >= 0 and eps > 0, got r1={r1}, r2={r2}, eps={eps}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        names = list(network.modality_names)
        if len(names) < 2:
            raise ValueError(f"projector pretraining pairs modalities; the model has only {names}")
        missing = [n for n in names if n not in network.projectors]
        if missing:
            raise ValueError(
                f"projector pretraining needs a projector for every modality; modality {missing[0]!r} has none "
                "(wrap its encoder in pyromm.models.ProjectedEncoder)"
            )
        self.network, self.objective = network, objective
        self.temperature, self.r1, self.r2, self.top_k, self.eps = float(temperature), float(r1), float(r2), top_k, float(eps)

    def pair_loss(self, h1: Tensor, h2: Tensor) -> Tensor:
        """The loss of one pair of projections: cca_loss or info_nce_loss."""
        if self.objective == "dcca":
            return cca_loss(h1, h2, self.r1, self.r2, self.top_k, self.eps)
        return info_nce_loss(h1, h2, self.temperature)

    def model(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """One factor −B · loss_{m,m'} per pair of modalities."""
        pyro.module("pyromm_vae", self.network)
        g = projections(self.network, batch)
        prefix = "cca" if self.objective == "dcca" else "nce"
        for a, b in combinations(g, 2):
            pyro.factor(f"{prefix}/{a}-{b}", -batch.batch_size * self.pair_loss(g[a], g[b]))

    def guide(self, batch: MultimodalBatch, hyper: Mapping[str, float] | None = None) -> None:
        """Samples nothing."""
        pyro.module("pyromm_vae", self.network)

    def __repr__(self) -> str:
        return f"ProjectorPretraining({self.objective!r})"
