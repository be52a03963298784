"""Linear-probe quality of the unimodal latent representations (MMVM paper, Appendix B.2.1)."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from pyromm.contracts import InferenceModel
from pyromm.data.dataset import MultimodalDataset
from pyromm.evaluation.classifiers import class_labels, evaluating


def encoder_means(
    model: InferenceModel, dataset: MultimodalDataset, *, batch_size: int = 256
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per modality m: (μ_m(x_m^i) flattened, y_i) over the samples i observing m.

    μ_m = ``model.encode(batch)[m].mean``; modalities missing from ``encode``'s output are left out.
    """
    class_labels(dataset)
    features: dict[str, list[torch.Tensor]] = {m: [] for m in model.modality_names}
    targets: dict[str, list[torch.Tensor]] = {m: [] for m in model.modality_names}
    with evaluating(model):
        for batch in dataset.batches(batch_size):
            posteriors = model.encode(batch)
            for name in model.modality_names:
                if name not in posteriors:
                    continue
                mean = posteriors[name].mean.reshape(batch.batch_size, -1)
                labels = batch.labels
                keep = batch.observed(name)
                if keep is not None:
                    mean, labels = mean[keep], labels[keep]
                features[name].append(mean.cpu())
                targets[name].append(labels.cpu())
    return {
        m: (torch.cat(features[m]).double().numpy(), torch.cat(targets[m]).numpy()) for m in features if features[m]
    }


def latent_classification(
    model: InferenceModel,
    train: MultimodalDataset,
    test: MultimodalDataset,
    *,
    num_train: int = 10000,
    batch_size: int = 256,
    max_iter: int = 1000,
    train_features: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, float]:
    """Per modality: accuracy on all test samples of a LogisticRegression (sklearn defaults: L2, C=1, lbfgs)
    fit on the encoder means of the first ``num_train`` training samples, or on ``train_features`` (per modality
    (features, labels), e.g. the means recorded during training by
    :class:`~pyromm.evaluation.training_features.TrainingEpochMeans`)."""
    if train_features is None:
        train_features = encoder_means(model, train.subset(slice(0, num_train)), batch_size=batch_size)
    train_means = train_features
    test_means = encoder_means(model, test, batch_size=batch_size)
    accuracies = {}
    for name, (x_train, y_train) in train_means.items():
        if name not in test_means:
            continue
        if len(y_train) == 0:
            raise ValueError(f"no sample among the probe's training samples observes modality {name!r}")
        probe = LogisticRegression(max_iter=max_iter).fit(x_train, y_train)
        x_test, y_test = test_means[name]
        accuracies[name] = float(probe.score(x_test, y_test))
    return accuracies
