"""Objectives for shared-latent models: the joint β-ELBO, MVAE's subsampled ELBO and MVTCAE."""
from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import torch
from torch import Tensor

from pyromm.data.batch import MultimodalBatch
from pyromm.infer.divergences import analytic_kl, check_rate_mode, rate
from pyromm.infer.objective import ObjectiveOutput


def reconstruction(model, batch: MultimodalBatch, z: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    """−w_m log p(x_m | z) per sample for each modality in ``names``, zero where x_m is missing."""
    out = {}
    for name in names:
        nll = -model.decode(name, z).log_prob(batch.data[name]) * model.modalities[name].weight
        observed = batch.observed(name)
        out[name] = nll if observed is None else nll * observed
    return out


class SharedELBO:
    r"""loss = 1/B Σ_b [ Σ_{m∈S} o_bm (−w_m log p(x_m | z)) + β · c · R(q(z | X_S), p(z)) ],  z ~ q(z | X_S).

    ``rate``: 'analytic' KL (Gaussian aggregates: AVG, PoE), 'jensen' Σ_k π_k KL(q_k ‖ p) (mixture
    aggregates: MoPoE's subset-averaged KL), 'selected' KL of the component each sample drew (the MMVM
    reference's MoE/MoPoE), or 'mc'. ``rate_scale`` c is 1, or 'modalities' for c = M as the MMVM
    reference's joint baselines (it sums the same KL once per modality).
    """

    def __init__(self, rate: str = "analytic", rate_scale: float | str = 1.0) -> None:
        self.rate = check_rate_mode(rate)
        if rate_scale != "modalities" and not (isinstance(rate_scale, (int, float)) and rate_scale >= 0):
            raise ValueError(f"rate_scale must be a number >= 0 or 'modalities', got {rate_scale!r}")
        self.rate_scale = rate_scale

    def terms(self, model, batch: MultimodalBatch, subset: Sequence[str] | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """Per-sample reconstruction terms of the subset's modalities and the per-sample rate.

        A sample that observes none of the subset's modalities contributes zero (its aggregate is computed
        from placeholders over the whole subset, then masked out), so subset ELBOs work on incomplete data.
        """
        names = list(batch.data) if subset is None else list(subset)
        present, mask = _subset_presence(batch, names)
        q = model.joint(batch, names) if mask is None else model.joint(batch, names, mask=mask)
        z = q.rsample()
        scale = len(model.modality_names) if self.rate_scale == "modalities" else self.rate_scale
        r = scale * rate(q, model.prior(batch), z, self.rate)
        return reconstruction(model, batch, z, names), r if present is None else r * present

    def __call__(self, model, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        rec, r = self.terms(model, batch)
        return _output(rec, r, hyper.get("beta", 1.0))


class SubsampledELBO:
    r"""MVAE's objective: ELBO(X) + Σ_m ELBO(x_m) + Σ_{j<k} ELBO(X_{S_j}), S_j random subsets of size 2..M−1.

    Each subset's ELBO reconstructs only that subset's modalities; the encoders run once per step.
    """

    def __init__(self, base: SharedELBO | None = None, num_random_subsets: int = 0) -> None:
        if num_random_subsets < 0:
            raise ValueError(f"num_random_subsets must be >= 0, got {num_random_subsets}")
        self.base = base if base is not None else SharedELBO("analytic")
        self.num_random_subsets = num_random_subsets

    def subsets(self, names: list[str]) -> list[list[str]]:
        """The full set, every singleton, and k subsets drawn uniformly among those of size 2..M−1."""
        chosen = [list(names)] + [[n] for n in names] if len(names) > 1 else [list(names)]
        middle = [list(c) for size in range(2, len(names)) for c in itertools.combinations(names, size)]
        if middle and self.num_random_subsets:
            picks = torch.randint(len(middle), (self.num_random_subsets,)).tolist()
            chosen += [middle[i] for i in picks]
        return chosen

    def __call__(self, model, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        beta = hyper.get("beta", 1.0)
        total, terms = 0.0, {}
        with model.cached_encoding():
            for subset in self.subsets(list(batch.data)):
                rec, r = self.base.terms(model, batch, subset)
                out = _output(rec, r, beta)
                total = total + out.loss
                terms[f"elbo/{'+'.join(subset)}"] = out.loss.detach()
        return ObjectiveOutput(total, terms)


class MVTCAEObjective:
    r"""MVTCAE (Hwang et al. 2021), as MultiVae computes it, with q = PoE of the unimodal posteriors:

    loss = 1/B Σ_b [ (M − α)/M Σ_m w_m (−log p(x_m | z)) + β ( α/M Σ_m KL(q(z|X) ‖ q_m) + (1 − α) KL(q(z|X) ‖ N(0, I)) ) ].
    """

    def __init__(self, alpha: float = 0.1) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.alpha = float(alpha)

    def __call__(self, model, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        m, alpha = len(model.modality_names), self.alpha
        with model.cached_encoding():
            posteriors = model.encode(batch)
            q = model.joint(batch)
        z = q.rsample()
        rec = {n: (m - alpha) / m * v for n, v in reconstruction(model, batch, z, list(batch.data)).items()}
        r = (1.0 - alpha) * analytic_kl(q, model.prior(batch))
        for name, q_m in posteriors.items():
            kl = analytic_kl(q, q_m)
            observed = batch.observed(name)
            r = r + alpha / m * (kl if observed is None else kl * observed)
        return _output(rec, r, hyper.get("beta", 1.0))


def _subset_presence(batch: MultimodalBatch, names: Sequence[str]) -> tuple[Tensor | None, dict | None]:
    """(present, mask): present[b] = sample b observes some modality of ``names``; mask marks every modality
    of the subset observed for the samples that observe none of them. Both None without masks."""
    masks = {n: batch.observed(n) for n in names}
    known = [m for m in masks.values() if m is not None]
    if not known:
        return None, None
    present = torch.ones_like(known[0]) if len(known) < len(masks) else torch.stack(known).any(0)
    absent = ~present
    return present, {n: None if m is None else m | absent for n, m in masks.items()}


def _output(rec: dict[str, Tensor], r: Tensor, beta: float) -> ObjectiveOutput:
    terms = {f"rec/{n}": v.mean().detach() for n, v in rec.items()}
    terms["rate"] = r.mean().detach()
    return ObjectiveOutput(sum(v.mean() for v in rec.values()) + beta * r.mean(), terms)
