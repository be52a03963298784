"""Joint and self reconstruction error (weighted test NLL and MSE) on a test set."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from pyromm.contracts import InferenceModel
from pyromm.data.batch import MultimodalBatch
from pyromm.data.dataset import MultimodalDataset
from pyromm.evaluation.classifiers import evaluating
from pyromm.models.joint_sampling import distribution_mean, seeded


def observed_all(batch: MultimodalBatch, names: Sequence[str]) -> MultimodalBatch:
    """The samples of ``batch`` observing every modality of ``names``, holding those modalities only (no mask)."""
    keep = None
    for name in names:
        observed = batch.observed(name)
        if observed is not None:
            keep = observed if keep is None else keep & observed
    data = {name: batch.data[name] for name in names}
    if keep is None:
        return MultimodalBatch(data, None, batch.labels)
    labels = None if batch.labels is None else batch.labels[keep]
    return MultimodalBatch({name: x[keep] for name, x in data.items()}, None, labels)


def observed_only(batch: MultimodalBatch, name: str) -> MultimodalBatch:
    """The samples of ``batch`` that observe ``name``, holding that modality only (no mask)."""
    return observed_all(batch, [name])


def modality_weight(model: nn.Module, name: str) -> float:
    """w_m = ``model.modality_weights[name]`` when the model has that attribute, else 1."""
    weights = getattr(model, "modality_weights", None)
    return 1.0 if weights is None else float(weights[name])


def reconstruction_error(
    model: InferenceModel,
    test: MultimodalDataset,
    *,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> dict:
    """Test-set reconstruction error, averaged over the samples observing each modality.

    ``joint``: p(x_m | z) from ``model.reconstruct(batch)``; ``self``: z ~ ``model.infer(x_m, [m])``, decoded by m.
    Per modality: ``nll[m]`` = mean_i −w_m log p(x_m^i | z^i) and
    ``mse[m]`` = mean_i mean_d (E[x_m,d | z^i] − x_m,d^i)²
    (means over posterior samples first when the distribution has sample dimensions; for categorical likelihoods
    E[x | z] is the most probable class, so the MSE is over class indices). ``nll_sum`` = Σ_m nll[m];
    ``mse_mean`` = mean_m mse[m].
    """
    names = list(model.modality_names)
    sums = {kind: {m: torch.zeros(2, dtype=torch.float64) for m in names} for kind in ("joint", "self")}
    counts = {m: 0 for m in names}
    with evaluating(model), seeded(generator, test.device):
        for batch in test.batches(batch_size):
            reconstructions = model.reconstruct(batch)
            for name in names:
                if name not in reconstructions:
                    raise KeyError(f"model.reconstruct returned no distribution for modality {name!r}")
                keep = batch.observed(name)
                nll, mse = _errors(reconstructions[name], batch.data[name], modality_weight(model, name))
                if keep is not None:
                    nll, mse = nll[keep], mse[keep]
                sums["joint"][name] += torch.stack([nll.sum(), mse.sum()]).double().cpu()
                single = observed_only(batch, name)
                if single.batch_size == 0:
                    continue
                z = model.infer(single, [name]).sample()
                nll, mse = _errors(model.decode(name, z), single.data[name], modality_weight(model, name))
                sums["self"][name] += torch.stack([nll.sum(), mse.sum()]).double().cpu()
                counts[name] += single.batch_size
    return {kind: _summary(sums[kind], counts) for kind in ("joint", "self")}


def _errors(likelihood: Distribution, x: Tensor, weight: float) -> tuple[Tensor, Tensor]:
    """Per-sample −w log p(x | z) and MSE of E[x | z], averaged over any leading sample dimensions."""
    batch = x.shape[0]
    nll = -weight * likelihood.log_prob(x).reshape(-1, batch).mean(0)
    mean = distribution_mean(likelihood).reshape(-1, *x.shape).to(torch.float64)
    mse = (mean - x.to(torch.float64)).pow(2).reshape(mean.shape[0], batch, -1).mean(-1).mean(0)
    return nll, mse


def _summary(sums: dict[str, Tensor], counts: dict[str, int]) -> dict:
    nll = {m: float(s[0]) / counts[m] if counts[m] else None for m, s in sums.items()}
    mse = {m: float(s[1]) / counts[m] if counts[m] else None for m, s in sums.items()}
    valid = [m for m in sums if counts[m]]
    return {
        "nll": nll,
        "mse": mse,
        "nll_sum": sum(nll[m] for m in valid),
        "mse_mean": sum(mse[m] for m in valid) / len(valid) if valid else None,
    }
