"""Evaluation of multimodal VAEs through the inference contract: latent linear probes, coherence,
reconstruction error, FID of generated images and figures."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from pyromm.contracts import InferenceModel
from pyromm.data.dataset import MultimodalDataset
from pyromm.evaluation.clustering import kmeans_accuracy
from pyromm.evaluation.likelihood import joint_log_likelihood
from pyromm.evaluation.subsets import coherence_by_num_inputs, joint_coherence
from pyromm.evaluation.classifiers import class_labels, classifier_accuracy, train_modality_classifiers
from pyromm.evaluation.coherence import coherence
from pyromm.evaluation.latent import encoder_means, latent_classification
from pyromm.evaluation.latent_samplers import fit_latent_sampler, sampler_kind, training_latents
from pyromm.models.joint_sampling import LatentSampler
from pyromm.evaluation.fid import (
    FeatureExtractor,
    FIDWeightsError,
    InceptionFeatures,
    feature_statistics,
    fid,
    frechet_distance,
    generation_fid,
    image_modalities,
    network_features,
)
from pyromm.evaluation.plots import (
    conditional_grid_figure,
    latent_scatter_figure,
    plot_conditional_grid,
    plot_latent_scatter,
    plot_run,
    plot_tradeoff,
    plot_training_curves,
    run_title,
    save_figure,
    tradeoff_figure,
    training_curves_figure,
)
from pyromm.evaluation.reconstruction import distribution_mean, reconstruction_error

__all__ = [
    "FeatureExtractor",
    "FIDWeightsError",
    "InceptionFeatures",
    "feature_statistics",
    "fid",
    "generation_fid",
    "image_modalities",
    "network_features",
    "frechet_distance",
    "coherence_by_num_inputs",
    "joint_coherence",
    "joint_log_likelihood",
    "kmeans_accuracy",
    "evaluate",
    "train_modality_classifiers",
    "classifier_accuracy",
    "latent_classification",
    "encoder_means",
    "fit_latent_sampler",
    "training_latents",
    "coherence",
    "reconstruction_error",
    "distribution_mean",
    "plot_tradeoff",
    "plot_latent_scatter",
    "plot_conditional_grid",
    "plot_training_curves",
    "plot_run",
    "run_title",
    "save_figure",
    "tradeoff_figure",
    "latent_scatter_figure",
    "conditional_grid_figure",
    "training_curves_figure",
]


def evaluate(
    model: InferenceModel,
    train: MultimodalDataset,
    test: MultimodalDataset,
    classifiers: dict[str, nn.Module],
    *,
    num_train: int = 10000,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    joint_samples: int = 1000,
    likelihood_samples: int = 0,
    latent_sampler: str | LatentSampler | None = None,
    latent_max_iter: int = 1000,
    latent_train_features: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict:
    """All metrics plus summary scalars: ``latent_acc_mean`` = mean_m latent accuracy, ``coherence_cross_mean``
    = mean over source ≠ target coherence, ``rec_nll`` = Σ_m weighted joint-reconstruction NLL,
    ``rec_mse`` = mean_m joint-reconstruction MSE, ``num_classes`` = the distinct labels of train and test (chance
    accuracy is 1 / num_classes). Coherence by number of inputs is computed for M > 2,
    joint coherence from ``joint_samples`` prior draws (models with ``sample_prior``), k-means accuracy on
    latent means, and the importance-sampled log p(X) with ``likelihood_samples`` samples when > 0.
    With ``latent_sampler`` (``'gmm'`` or ``'maf'``), ``joint_coherence_sampler`` is the joint coherence of
    ``joint_samples`` draws of that sampler fitted on the latents of the first ``num_train`` training samples
    (``fit_latent_sampler``): the only joint coherence of models without an unconditional prior (MMVM VAE); a
    sampler fitted already (``pyromm.generation.fit_generation_sampler``) is used as given.
    ``latent_max_iter`` caps the latent probe's solver iterations (the MMVM code: 10000); the probe fits
    ``latent_train_features`` (per modality (features, labels)) instead of the training means when given."""
    latent = latent_classification(
        model, train, test, num_train=num_train, batch_size=batch_size, max_iter=latent_max_iter,
        train_features=latent_train_features,
    )
    coherent = coherence(model, test, classifiers, batch_size=batch_size, generator=generator)
    reconstruction = reconstruction_error(model, test, batch_size=batch_size, generator=generator)
    by_inputs = (
        coherence_by_num_inputs(model, test, classifiers, batch_size=batch_size, generator=generator)
        if len(model.modality_names) > 2
        else None
    )
    log_likelihood = (
        joint_log_likelihood(model, test, num_samples=likelihood_samples, generator=generator)
        if likelihood_samples > 0
        else None
    )
    results = {
        "latent": latent,
        "coherence": coherent,
        "coherence_by_num_inputs": by_inputs,
        "joint_coherence": joint_coherence(model, classifiers, joint_samples, batch_size=batch_size, generator=generator),
        "kmeans": kmeans_accuracy(model, test, batch_size=batch_size),
        "log_likelihood": log_likelihood,
        "reconstruction": reconstruction,
        "latent_acc_mean": sum(latent.values()) / len(latent) if latent else None,
        "coherence_cross_mean": coherent["cross"],
        "rec_nll": reconstruction["joint"]["nll_sum"],
        "rec_mse": reconstruction["joint"]["mse_mean"],
        "num_classes": int(torch.cat([class_labels(train).cpu(), class_labels(test).cpu()]).unique().numel()),
        "latent_sampler": latent_sampler if latent_sampler is None or isinstance(latent_sampler, str) else (
            sampler_kind(latent_sampler) or type(latent_sampler).__name__
        ),
        "joint_coherence_sampler": None,
    }
    if latent_sampler is not None:
        sampler = latent_sampler
        if isinstance(latent_sampler, str):
            sampler = fit_latent_sampler(
                model, train, latent_sampler, num_train=num_train, batch_size=batch_size, generator=generator
            )
        results["joint_coherence_sampler"] = joint_coherence(
            model, classifiers, joint_samples, sampler=sampler, batch_size=batch_size, generator=generator
        )
    return results

