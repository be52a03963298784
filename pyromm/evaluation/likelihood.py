"""Importance-sampled joint test log-likelihood with the joint posterior as proposal (MultiVae, Appendix C.2)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution

from pyromm.contracts import InferenceModel
from pyromm.data.batch import MultimodalBatch
from pyromm.data.dataset import MultimodalDataset
from pyromm.evaluation.classifiers import evaluating
from pyromm.evaluation.reconstruction import modality_weight, seeded


def has_batch_prior(model: InferenceModel) -> bool:
    """True when the model has ``prior(batch)`` → p(z) per sample (the ``prior`` of
    :class:`~pyromm.contracts.UnconditionalPrior`), the prior of the latent ``model.infer`` returns. ``prior``
    has this one meaning in pyromm: a data-dependent prior is a model's ``conditional_prior``."""
    return callable(getattr(model, "prior", None))


def joint_log_likelihood(
    model: InferenceModel,
    test: MultimodalDataset,
    *,
    num_samples: int = 1000,
    batch_size: int = 64,
    samples_per_chunk: int = 100,
    generator: torch.Generator | None = None,
) -> float | None:
    """Test mean of the importance-sampled estimate of log p(X^i):

    log p(X) ≈ logmeanexp_k [Σ_{m∈O} w_m log p(x_m | z_k) + log p(z_k) − log q(z_k | X)], z_k ~ q(z | X),

    q(z | X) = ``model.infer(batch, all modalities)``, p(z) = ``model.prior(batch)``, p(x_m | z) =
    ``model.decode(m, z)``, O = the modalities the sample observes, w_m = ``model.modality_weights[m]`` (or 1),
    K = ``num_samples`` drawn ``samples_per_chunk`` at a time (memory ∝ batch_size · samples_per_chunk).
    None when the model has no ``prior(batch)`` (see :func:`has_batch_prior`).
    """
    if not has_batch_prior(model):
        return None
    if num_samples < 1 or samples_per_chunk < 1:
        raise ValueError(f"num_samples and samples_per_chunk must be >= 1, got {num_samples}, {samples_per_chunk}")
    names = list(model.modality_names)
    total = torch.zeros((), dtype=torch.float64)
    with evaluating(model), seeded(generator, test.device):
        for batch in test.batches(batch_size):
            posterior = model.infer(batch, names)
            prior = model.prior(batch)
            log_weights = [
                importance_log_weights(model, batch, names, posterior, prior, chunk)
                for chunk in _chunk_sizes(num_samples, samples_per_chunk)
            ]
            log_p = torch.cat(log_weights).double().logsumexp(0) - math.log(num_samples)
            total += log_p.sum().cpu()
    return float(total) / len(test)


def importance_log_weights(
    model: InferenceModel,
    batch: MultimodalBatch,
    names: Sequence[str],
    posterior: Distribution,
    prior: Distribution,
    num_samples: int,
) -> Tensor:
    """``(num_samples, B)`` log w_k = Σ_{m∈O} w_m log p(x_m | z_k) + log p(z_k) − log q(z_k | X), z_k ~ q."""
    z = posterior.sample((num_samples,))
    log_w = prior.log_prob(z) - posterior.log_prob(z)
    for name in names:
        log_lik = modality_weight(model, name) * model.decode(name, z).log_prob(batch.data[name])
        observed = batch.observed(name)
        log_w = log_w + (log_lik if observed is None else torch.where(observed, log_lik, 0.0))
    return log_w


def _chunk_sizes(total: int, chunk: int) -> list[int]:
    """``total`` split into chunks of at most ``chunk``."""
    return [min(chunk, total - start) for start in range(0, total, chunk)]
