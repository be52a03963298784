r"""Latent samplers fitted on training latents, for unconditional generation (MultiVae's GMM/MAF samplers).

A model whose prior is data-dependent (the MMVM VAE) or a poor generator (a VAE's N(0, I) far from its aggregate
posterior) gets an unconditional distribution by density estimation on latents of the training set:

* one latent per modality (``MultimodalVAE``: independent VAEs, MMVM): the training latent of sample i is the
  concatenation [z_1^i; …; z_M^i], z_m^i ~ q_m(z | x_m^i), so the sampler models the modalities' latents
  jointly (independent per-modality samplers would make the generated modalities independent);
* one shared latent: z^i ~ ``model.infer(X^i, all modalities)``, as MultiVae fits its samplers on q(z | X).

A draw is then split back into the latent every decoder takes (``decoder_latents``).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from pyromm.data.dataset import MultimodalDataset
from pyromm.distributions import GaussianMixtureSampler, MAFSampler
from pyromm.evaluation.classifiers import evaluating
from pyromm.evaluation.reconstruction import observed_all, seeded
from pyromm.models.joint_sampling import LatentSampler
from pyromm.models.multimodal_vae import MultimodalVAE

LATENT_SAMPLERS: dict[str, type] = {"gmm": GaussianMixtureSampler, "maf": MAFSampler}


def per_modality_latents(model: nn.Module) -> bool:
    """Whether every modality has its own latent z_m (``MultimodalVAE``) rather than one shared z."""
    return isinstance(model, MultimodalVAE)


def training_latents(
    model: nn.Module,
    train: MultimodalDataset,
    *,
    num_train: int = 10000,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Latents ``(N, L)`` of the first ``num_train`` training samples that observe every modality.

    Per-modality models: [z_1; …; z_M], z_m ~ q_m(z | x_m) (L = M·D); shared-latent models: z ~ q(z | X) (L = D).
    """
    names = list(model.modality_names)
    rows = []
    with evaluating(model), seeded(generator, train.device):
        for batch in train.subset(slice(0, num_train)).batches(batch_size):
            complete = observed_all(batch, names)
            if complete.batch_size == 0:
                continue
            if per_modality_latents(model):
                posteriors = model.encode(complete)
                rows.append(torch.cat([posteriors[m].sample() for m in names], -1))
            else:
                rows.append(model.infer(complete, names).sample())
    if not rows:
        raise ValueError(f"no sample among the first {num_train} training samples observes every modality {names}")
    return torch.cat(rows)


def fit_latent_sampler(
    model: nn.Module,
    train: MultimodalDataset,
    kind: str = "gmm",
    *,
    num_train: int = 10000,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    **options,
) -> LatentSampler:
    """A ``kind`` sampler (``'gmm'``: ``GaussianMixtureSampler``, ``'maf'``: ``MAFSampler``, built with
    ``options``) fitted on :func:`training_latents`."""
    if kind not in LATENT_SAMPLERS:
        raise ValueError(f"unknown latent sampler {kind!r}; choose from {sorted(LATENT_SAMPLERS)}")
    latents = training_latents(model, train, num_train=num_train, batch_size=batch_size, generator=generator)
    return LATENT_SAMPLERS[kind](**options).fit(latents)


def sampler_kind(sampler: LatentSampler) -> str | None:
    """The name in :data:`LATENT_SAMPLERS` of ``sampler``'s class (None for another class)."""
    return next((kind for kind, cls in LATENT_SAMPLERS.items() if type(sampler) is cls), None)


def decoder_latents(model: nn.Module, z: Tensor) -> Mapping[str, Tensor]:
    """The latent each decoder takes from a sampler draw ``z (n, L)``: slice m of [z_1; …; z_M] for per-modality
    models, z itself for every decoder of a shared-latent model."""
    if per_modality_latents(model):
        return model.split_latents(z)
    return dict.fromkeys(model.modality_names, z)
