"""Incomplete multimodal datasets by masking modalities (MultiVae case study: Section 4 and Appendix E.2).

The data tensors are shared with the input dataset, never changed; only the mask is new. Entries the input
already masks stay masked. ``metadata["missing"]`` lists every masking applied, oldest first.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from pyromm.data.dataset import MultimodalDataset


def drop_modalities(
    dataset: MultimodalDataset,
    keep_probability: float | Mapping[str, float],
    *,
    keep_first: bool = True,
    seed: int = 0,
) -> MultimodalDataset:
    """Missing completely at random: modality m of sample i stays observed with probability η_m, independently
    (Bernoulli(η_m) draws from ``numpy.random.default_rng(seed)``).

    ``keep_probability``: one η for every modality but the first, or a mapping modality → η (unnamed modalities
    keep η = 1). With ``keep_first`` the first modality is never dropped, so every sample observes something;
    without it, a sample left with no observed modality gets back one of its previously observed ones, drawn
    uniformly.
    """
    names = dataset.modalities
    first = names[0]
    if isinstance(keep_probability, Mapping):
        unknown = [m for m in keep_probability if m not in names]
        if unknown:
            raise KeyError(f"keep_probability names unknown modality {unknown[0]!r}; modalities are {names}")
        etas = {m: float(keep_probability.get(m, 1.0)) for m in names}
    else:
        etas = {m: float(keep_probability) for m in names}
        if keep_first:
            etas[first] = 1.0
    for name, eta in etas.items():
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"keep probability η of modality {name!r} must lie in [0, 1], got {eta}")
    if keep_first and etas[first] != 1.0:
        raise ValueError(f"keep_first=True keeps modality {first!r} observed, but its η is {etas[first]}")
    rng = np.random.default_rng(seed)
    before = observed_masks(dataset)
    after = {m: before[m] & torch.from_numpy(rng.random(len(dataset)) < etas[m]) for m in names}
    record = {"mechanism": "MCAR", "keep_probability": etas, "keep_first": keep_first, "seed": seed}
    return _masked(dataset, _restore_empty(before, after, rng), record)


def drop_by_label(
    dataset: MultimodalDataset, modality: str, probability_per_label: Sequence[float], seed: int = 0
) -> MultimodalDataset:
    """Label-dependent missingness (the incomplete MHD dataset): ``modality`` of sample i is dropped with
    probability ``probability_per_label[y_i]``, independently (``numpy.random.default_rng(seed)``).

    A sample for which ``modality`` is the only observed one keeps it.
    """
    if modality not in dataset.data:
        raise KeyError(f"unknown modality {modality!r}; modalities are {dataset.modalities}")
    labels = dataset.labels
    if labels is None or labels.dim() != 1 or labels.is_floating_point():
        raise ValueError("drop_by_label needs (N,) integer class labels")
    probabilities = np.asarray(probability_per_label, dtype=np.float64)
    if probabilities.ndim != 1 or not np.all((probabilities >= 0.0) & (probabilities <= 1.0)):
        raise ValueError(f"probability_per_label must be a sequence of values in [0, 1], got {probability_per_label}")
    y = labels.cpu().numpy()
    if y.min() < 0 or y.max() >= len(probabilities):
        raise ValueError(
            f"labels range over [{y.min()}, {y.max()}] but probability_per_label has {len(probabilities)} entries"
        )
    rng = np.random.default_rng(seed)
    before = observed_masks(dataset)
    after = dict(before)
    after[modality] = before[modality] & torch.from_numpy(rng.random(len(dataset)) >= probabilities[y])
    record = {
        "mechanism": "label-dependent",
        "modality": modality,
        "probability_per_label": probabilities.tolist(),
        "seed": seed,
    }
    return _masked(dataset, _restore_empty(before, after, rng), record)


def drop_increasing_with_label(
    dataset: MultimodalDataset, modality: str, max_probability: float, *, num_classes: int | None = None, seed: int = 0
) -> MultimodalDataset:
    """Missing not at random, more often for larger labels (as in MultiVae's incomplete MHD study):
    :func:`drop_by_label` with p_y = ``max_probability`` · y / (C − 1) for labels y = 0..C−1, so class 0 always
    keeps ``modality`` and class C − 1 loses it with probability ``max_probability``.

    C is ``num_classes``, by default 1 + the largest label.
    """
    if not 0.0 <= max_probability <= 1.0:
        raise ValueError(f"max_probability must lie in [0, 1], got {max_probability}")
    if dataset.labels is None or dataset.labels.dim() != 1 or dataset.labels.is_floating_point():
        raise ValueError("drop_increasing_with_label needs (N,) integer class labels")
    classes = int(dataset.labels.max()) + 1 if num_classes is None else num_classes
    if classes < 2:
        raise ValueError(f"drop_increasing_with_label needs at least 2 classes, got {classes}")
    probabilities = max_probability * np.arange(classes) / (classes - 1)
    return drop_by_label(dataset, modality, probabilities.tolist(), seed=seed)


def complete_only(dataset: MultimodalDataset) -> MultimodalDataset:
    """The samples observing every modality, without a mask (the "complete samples only" training paradigm)."""
    masks = list(dataset.mask.values()) if dataset.mask else []
    complete = torch.stack(masks).all(0) if masks else torch.ones(len(dataset), dtype=torch.bool, device=dataset.device)
    if not bool(complete.any()):
        raise ValueError("no sample observes every modality")
    kept = dataset.subset(complete.nonzero().squeeze(1))
    return MultimodalDataset(kept.data, kept.labels, None, kept.metadata)


def observed_masks(dataset: MultimodalDataset) -> dict[str, Tensor]:
    """The ``(N,)`` CPU bool observed mask of every modality (all True where the dataset has none)."""
    masks = dataset.mask or {}
    return {m: masks[m].cpu() if m in masks else torch.ones(len(dataset), dtype=torch.bool) for m in dataset.modalities}


def _restore_empty(before: dict[str, Tensor], after: dict[str, Tensor], rng: np.random.Generator) -> dict[str, Tensor]:
    """Give each sample observing nothing in ``after`` back one of its modalities observed in ``before``,
    drawn uniformly."""
    names = list(after)
    stacked = torch.stack([after[m] for m in names])
    empty = ~stacked.any(0)
    if not bool(empty.any()):
        return after
    scores = torch.from_numpy(rng.random(stacked.shape))
    scores[~torch.stack([before[m] for m in names])] = -1.0
    chosen = torch.arange(len(names))[:, None] == scores.argmax(0)
    restored = stacked | (chosen & empty)
    return {m: restored[i] for i, m in enumerate(names)}


def _masked(dataset: MultimodalDataset, mask: dict[str, Tensor], record: dict) -> MultimodalDataset:
    """``dataset``'s data and labels with ``mask`` (moved to the data's device) and ``record`` appended to
    ``metadata["missing"]``."""
    metadata = {**dataset.metadata, "missing": [*dataset.metadata.get("missing", []), record]}
    device = dataset.device
    return MultimodalDataset(dataset.data, dataset.labels, {m: v.to(device) for m, v in mask.items()}, metadata)
