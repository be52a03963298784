"""Coherence by number of conditioning modalities and joint coherence of prior samples (MoPoE / MultiVae tables)."""
from __future__ import annotations

from contextlib import ExitStack
from itertools import chain, combinations
from typing import Mapping, Sequence

import torch
from torch import nn

from pyromm.contracts import InferenceModel
from pyromm.data.dataset import MultimodalDataset
from pyromm.evaluation.classifiers import evaluating
from pyromm.evaluation.coherence import generation_accuracy, pair_key
from pyromm.evaluation.latent_samplers import LatentSampler, decoder_latents
from pyromm.evaluation.reconstruction import distribution_mean, seeded


def subset_key(subset: Sequence[str], target: str) -> str:
    """The JSON key of conditioning ``subset`` and ``target``: ``"a+b->c"``."""
    return pair_key("+".join(subset), target)


def coherence_by_num_inputs(
    model: InferenceModel,
    test: MultimodalDataset,
    classifiers: Mapping[str, nn.Module],
    *,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> dict:
    """Coherence of generations conditioned on every non-empty proper subset S of the M modalities.

    For every S, every target m ∉ S and every test sample i observing all of S: z ~ ``model.infer(X_S^i, S)``
    (a fresh sample per target), x̂ = E[p(x_m | z)] (``model.decode(m, z)``),
    ``subset["a+b->m"]`` = mean_i [argmax f_m(x̂) = y_i] (None when no sample observes all of S).
    ``by_num_inputs[str(k)]`` = mean over the pairs (S, m) with |S| = k of ``subset``, k = 1..M−1: the mean over
    all subsets of size k and all targets outside them (MoPoE/MultiVae tables).
    """
    names = list(model.modality_names)
    subsets = [s for k in range(1, len(names)) for s in combinations(names, k)]
    pairs = [(s, t) for s in subsets for t in names if t not in s]
    accuracy = generation_accuracy(model, test, classifiers, pairs, batch_size=batch_size, generator=generator)
    by_num_inputs = {}
    for k in range(1, len(names)):
        values = [v for (s, _), v in accuracy.items() if len(s) == k and v is not None]
        by_num_inputs[str(k)] = sum(values) / len(values) if values else None
    return {"subset": {subset_key(s, t): v for (s, t), v in accuracy.items()}, "by_num_inputs": by_num_inputs}


def joint_coherence(
    model: InferenceModel,
    classifiers: Mapping[str, nn.Module],
    num_samples: int,
    *,
    sampler: LatentSampler | None = None,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> float | None:
    """Fraction of unconditional samples whose generated modalities all get the same class.

    z_j ~ p(z) (``model.sample_prior(n) -> (n, D)``), or z_j ~ ``sampler.sample(n)`` when a latent sampler fitted
    on training latents is given (``fit_latent_sampler``); x̂_m = E[p(x_m | z_j,m)] for every modality m, with
    z_j,m the latent decoder m takes (``decoder_latents``: slice m of [z_1; …; z_M] for one latent per modality);
    joint coherence = mean_j [argmax f_m(x̂_m) is the same for all m]. None without a sampler when the model has
    no unconditional prior (``sample_prior``), e.g. models with data-dependent priors such as the MMVM VAE.
    """
    sample = getattr(model, "sample_prior", None) if sampler is None else sampler.sample
    if sample is None:
        return None
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    names = list(model.modality_names)
    check_classifiers(names, classifiers)
    agree = 0
    with ExitStack() as stack:
        for module in (model, *classifiers.values()):
            stack.enter_context(evaluating(module))
        device = module_device(model)
        stack.enter_context(seeded(generator, device))
        for start in range(0, num_samples, batch_size):
            latents = decoder_latents(model, sample(min(batch_size, num_samples - start)).to(device))
            predicted = torch.stack(
                [classifiers[name](distribution_mean(model.decode(name, latents[name]))).argmax(-1) for name in names]
            )
            agree += int((predicted == predicted[0]).all(0).sum())
    return agree / num_samples


def check_classifiers(names: Sequence[str], classifiers: Mapping[str, nn.Module]) -> None:
    """Raise a KeyError naming the first modality of ``names`` without a classifier."""
    missing = [m for m in names if m not in classifiers]
    if missing:
        raise KeyError(f"no classifier for modality {missing[0]!r}; classifiers cover {sorted(classifiers)}")


def module_device(module: nn.Module) -> torch.device:
    """The device of the first parameter or buffer of ``module`` (CPU when it has none)."""
    tensor = next(chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device
