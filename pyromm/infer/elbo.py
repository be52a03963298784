"""β-ELBOs for models with one latent per modality (independent VAEs, MMVM, user priors)."""
from __future__ import annotations

from typing import Mapping

import torch

from pyromm.data.batch import MultimodalBatch
from pyromm.infer.divergences import check_rate_mode, rate
from pyromm.infer.objective import ObjectiveOutput


class MultimodalELBO:
    r"""loss = 1/B Σ_b Σ_m o_bm [ −w_m log p(x_m | z_m) + β R(q_m, h_m) ],  z_m ~ q_m(z_m | x_m).

    ``rate`` picks R: 'analytic' (closed-form KL), 'jensen' (Σ_k w_k KL(q_m ‖ p_k) for a mixture prior,
    the MMVM reference code's bound, exact KL for a single Gaussian prior) or 'mc' (log q_m(z_m) −
    log h_m(z_m), the paper's KL to the mixture estimated by sampling). o_bm = 1 where modality m of
    sample b is observed. β is ``hyper['beta']`` (default 1).
    """

    def __init__(self, rate: str = "analytic") -> None:
        self.rate = check_rate_mode(rate)

    def __call__(self, model, batch: MultimodalBatch, hyper: Mapping[str, float]) -> ObjectiveOutput:
        beta = hyper.get("beta", 1.0)
        posteriors = model.encode(batch)
        priors = model.priors(posteriors, batch, hyper)
        terms: dict[str, torch.Tensor] = {}
        total = 0.0
        for name, q in posteriors.items():
            z = q.rsample()
            rec = -model.decode(name, z).log_prob(batch.data[name]) * model.modalities[name].weight
            r = rate(q, priors[name], z, self.rate)
            observed = batch.observed(name)
            if observed is not None:
                rec, r = rec * observed, r * observed
            rec, r = rec.mean(), r.mean()
            terms[f"rec/{name}"], terms[f"rate/{name}"] = rec.detach(), r.detach()
            total = total + rec + beta * r
        return ObjectiveOutput(total, terms)
