r"""Stratified K-sample bounds for a mixture posterior q(z | X) = 1/|O| Σ_r q_r(z | x_r) (MMVAE, MMVAE+).

The guide draws K samples from each component r (a *stratum*: its sites carry ``infer={"stratum": r}``) and
scores them under the whole mixture; the model decodes each stratum's draws with every decoder. Per stratum r
and sample b the log-weights lw_{r,k} are the sums of the stratum's model and guide terms (``pyromm.infer.iwae``).
A stratum is kept for sample b where any of its sites is unmasked (O_b, the observed modalities).

* ``bound='looser'``: mean over kept r of the per-stratum estimator over k (MMVAE's and MMVAE+'s default);
* ``bound='tight'``: the estimator over all kept (r, k) pooled.

``estimator='iwae'``: log (1/K) Σ_k exp(lw); ``'dreg'``: Σ_k w̃ lw with the w̃ hook on the stratum's draws and,
with ``detach_guide=True`` (default), log q at detached guide parameters. ``detach_guide=False`` keeps the live
parameters in log q, as the official MMVAE+ code's DReG does (the encoders then also get the score term).
"""
from __future__ import annotations

import torch
from torch import Tensor

from pyromm.infer.iwae import ParticleELBO, hook_weights, importance_weights, iwae_bound
from pyromm.infer.traces import SiteError, sample_sites

ESTIMATORS = ("iwae", "dreg")
BOUNDS = ("looser", "tight")


class StratifiedIWAE(ParticleELBO):
    r"""loss = −Σ_b objective_b of the module docstring, with K particles per stratum.

    Terms: ``rec/<site>`` and ``rate/<site>`` averaged over the particles, and ``iwae`` (the IWAE value of the
    same bound and draws). K = 1 with ``estimator='iwae'`` is MMVAE+'s single-sample ELBO.
    """

    def __init__(
        self,
        num_particles: int = 10,
        estimator: str = "dreg",
        bound: str = "looser",
        detach_guide: bool = True,
        max_plate_nesting: int | None = None,
    ) -> None:
        super().__init__(num_particles, max_plate_nesting)
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose from {ESTIMATORS}")
        if bound not in BOUNDS:
            raise ValueError(f"unknown bound {bound!r}; choose from {BOUNDS}")
        self.estimator, self.bound = estimator, bound
        self.detach_guide = estimator == "dreg" and bool(detach_guide)

    def terms(self, model, guide, *args, **kwargs) -> tuple[Tensor, dict[str, Tensor]]:
        model_trace, guide_trace, dim = self.particle_traces(model, guide, args, kwargs)
        lw: dict = {}
        draws: dict = {}
        terms: dict[str, Tensor] = {}
        for key, stratum, value, guide_site in self.site_log_weights(model_trace, guide_trace, dim):
            if stratum is None:
                raise SiteError(
                    f"StratifiedIWAE needs every site in a stratum, but the site of term {key!r} has no "
                    "infer={'stratum': ...}"
                )
            lw[stratum] = lw.get(stratum, 0.0) + value
            terms[key] = terms.get(key, 0.0) - value.detach().mean(0).sum()
            if guide_site is not None:
                draws.setdefault(stratum, []).append(guide_site)
        strata = list(draws)
        stacked = torch.stack([lw[r] for r in strata], dim=1)  # (K, R, B)
        kept = _kept_strata((guide_trace, model_trace), stacked.shape[-1], stacked.device)
        keep = torch.stack([kept[r] for r in strata])  # (R, B)
        objective, bound = self._reduce(stacked, keep, [draws[r] for r in strata], dim)
        terms["iwae"] = bound.sum()
        return -objective.sum(), terms

    def _reduce(self, lw: Tensor, keep: Tensor, draws: list[list[dict]], dim: int) -> tuple[Tensor, Tensor]:
        """(objective ``(B,)``, detached IWAE value ``(B,)``) from lw ``(K, R, B)`` and the kept strata ``(R, B)``."""
        dreg = self.estimator == "dreg"
        if self.bound == "tight":
            pooled, mask = lw.reshape(-1, lw.shape[-1]), keep.expand(lw.shape).reshape(-1, lw.shape[-1])
            if dreg:
                weights = importance_weights(pooled, mask).reshape(lw.shape)
                for r, sites in enumerate(draws):
                    for site in sites:
                        hook_weights(site, weights[:, r], dim)
                objective = (weights.reshape(pooled.shape) * pooled.masked_fill(~mask, 0.0)).sum(0)
            else:
                objective = iwae_bound(pooled, mask)
            return objective, iwae_bound(pooled.detach(), mask)
        if dreg:
            weights = importance_weights(lw)
            for r, sites in enumerate(draws):
                for site in sites:
                    hook_weights(site, weights[:, r], dim)
            per_stratum = (weights * lw).sum(0)
        else:
            per_stratum = iwae_bound(lw)
        return _mean_kept(per_stratum, keep), _mean_kept(iwae_bound(lw.detach()), keep)


def _kept_strata(traces, batch_size: int, device: torch.device) -> dict:
    """stratum -> ``(B,)`` bool: where some site of the stratum, in either trace, is unmasked. A source the sample
    does not observe masks all its sites; β = 0 (``scaled(0)``) masks the rate sites only, keeping the stratum."""
    kept: dict = {}
    for trace in traces:
        for _, site in sample_sites(trace):
            stratum = site["infer"].get("stratum")
            unmasked = _unmasked(site, batch_size, device)
            kept[stratum] = unmasked if stratum not in kept else kept[stratum] | unmasked
    return kept


def _unmasked(site: dict, batch_size: int, device: torch.device) -> Tensor:
    """``(B,)`` bool: where the site's mask keeps the sample (everywhere without a mask)."""
    mask = site["mask"]
    if mask is None or isinstance(mask, bool):
        return torch.full((batch_size,), mask is not False, dtype=torch.bool, device=device)
    return mask.expand(batch_size)


def _mean_kept(per_stratum: Tensor, keep: Tensor) -> Tensor:
    """mean over the kept strata of a ``(R, B)`` tensor."""
    return torch.where(keep, per_stratum, 0.0).sum(0) / keep.sum(0)

