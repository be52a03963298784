"""K-means clustering accuracy of the unimodal latent representations (MultiVae, Section 4.2)."""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans

from pyromm.contracts import InferenceModel
from pyromm.data.dataset import MultimodalDataset
from pyromm.evaluation.classifiers import class_labels
from pyromm.evaluation.latent import encoder_means


def matched_accuracy(clusters: np.ndarray, labels: np.ndarray) -> float:
    """max over one-to-one maps π of clusters to labels of mean_i [π(c_i) = y_i] (Hungarian algorithm on the
    cluster × label count table; clusters left unmatched count as errors)."""
    cluster_ids, cluster_index = np.unique(clusters, return_inverse=True)
    label_ids, label_index = np.unique(labels, return_inverse=True)
    counts = np.zeros((len(cluster_ids), len(label_ids)), dtype=np.int64)
    np.add.at(counts, (cluster_index, label_index), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum()) / len(labels)


def kmeans_accuracy(
    model: InferenceModel,
    test: MultimodalDataset,
    *,
    modality: str | None = None,
    num_clusters: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, float]:
    """Per modality m (every modality, or only ``modality``): KMeans(``num_clusters``, n_init=10,
    random_state=``seed``) on μ_m(x_m^i) = ``model.encode(batch)[m].mean`` over the test samples observing m,
    scored by :func:`matched_accuracy` against the labels. ``num_clusters`` defaults to the number of distinct
    test labels."""
    labels = class_labels(test)
    if modality is not None and modality not in model.modality_names:
        raise KeyError(f"unknown modality {modality!r}; the model has {list(model.modality_names)}")
    k = len(labels.unique()) if num_clusters is None else num_clusters
    means = encoder_means(model, test, batch_size=batch_size)
    if modality is not None and modality not in means:
        raise ValueError(f"no test sample observes modality {modality!r}")
    names = list(means) if modality is None else [modality]
    accuracies = {}
    for name in names:
        features, targets = means[name]
        clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(features)
        accuracies[name] = matched_accuracy(clusters, targets)
    return accuracies
