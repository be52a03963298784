"""Multiview digits built from scikit-learn's bundled 8x8 digits: the default dataset, no download.

Views share the digit label and differ in view-specific nuisance. A tuple joins different images of
the same digit (paired like PolyMNIST: per view and class, a seeded permutation of that class's
images in the split). Each view overlays its own background texture family with a random per-sample
phase or offset, x = d + (1 - d) * 0.5 * t for the digit d in [0, 1] and texture t in [0, 1], and
view m1 additionally inverts contrast (x -> 1 - x).
"""
from __future__ import annotations

import operator

import numpy as np
import torch

from pyromm.data.dataset import MultimodalDataset
from pyromm.data.polymnist import check_num_views, pair_within_classes

SIDE = 8
TEXTURE_AMPLITUDE = 0.5
INVERTED_VIEW = 1
NUISANCE = (
    "horizontal stripes (period 4, random phase)",
    "vertical stripes (period 4, random phase), contrast inverted",
    "diagonal stripes (period 4 along rows + columns, random phase)",
    "2x2 checkerboard (random row and column offset)",
    "gaussian blob (sd 1.5, random centre)",
)
_SPLIT_STREAM, _VIEW_STREAM = 0, 1
_SPLIT_IDS = {"train": 0, "test": 1}


def _texture(view: int, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 8, 8) textures in [0, 1] of the family of ``view``, one random phase/offset per sample."""
    i, j = np.meshgrid(np.arange(SIDE, dtype=np.float64), np.arange(SIDE, dtype=np.float64), indexing="ij")
    if view in (0, 1, 2):
        phase = rng.uniform(0.0, 2.0 * np.pi, n)[:, None, None]
        coordinate = (i, j, i + j)[view]
        return 0.5 + 0.5 * np.cos(0.5 * np.pi * coordinate + phase)
    if view == 3:
        offsets = rng.integers(0, 4, (2, n))[:, :, None, None]
        return (((i + offsets[0]) // 2 + (j + offsets[1]) // 2) % 2).astype(np.float64)
    centre = rng.uniform(0.0, SIDE - 1.0, (2, n))[:, :, None, None]
    return np.exp(-((i - centre[0]) ** 2 + (j - centre[1]) ** 2) / (2.0 * 1.5**2))


def _stratified_split(labels: np.ndarray, seed: int, test_fraction: float) -> dict[str, np.ndarray]:
    """Ascending indices of the train and test samples: per class, a seeded random ``test_fraction``."""
    rng = np.random.Generator(np.random.PCG64([seed, _SPLIT_STREAM]))
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_test = int(round(test_fraction * members.shape[0]))
        if not 1 <= n_test < members.shape[0]:
            raise ValueError(f"test_fraction={test_fraction} leaves class {c} without train or test samples")
        test.append(members[rng.permutation(members.shape[0])[:n_test]])
    is_test = np.zeros(labels.shape[0], dtype=bool)
    is_test[np.concatenate(test)] = True
    return {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}


def load_digits_multiview(
    split: str = "train", num_views: int = 3, seed: int = 0, test_fraction: float = 0.2
) -> MultimodalDataset:
    """Multiview digits ``split``: modalities "m0".."m{M-1}" float32 (1, 8, 8) in [0, 1], int64 labels.

    The stratified train/test split depends only on ``seed`` and ``test_fraction``; view m depends
    only on ``seed``, the split and m, so the first k views do not change with ``num_views``.
    """
    from sklearn.datasets import load_digits

    num_views, seed = check_num_views(num_views), operator.index(seed)
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    digits = load_digits()
    index = _stratified_split(digits.target, seed, test_fraction)[split]
    images = digits.images[index] / 16.0
    labels = digits.target[index].astype(np.int64)
    data = {}
    for m in range(num_views):
        rng = np.random.Generator(np.random.PCG64([seed, _VIEW_STREAM, _SPLIT_IDS[split], m]))
        digit = images[pair_within_classes(rng, labels)]
        x = digit + (1.0 - digit) * TEXTURE_AMPLITUDE * _texture(m, rng, labels.shape[0])
        if m == INVERTED_VIEW:
            x = 1.0 - x
        data[f"m{m}"] = torch.from_numpy(x[:, None].astype(np.float32))
    metadata = {
        "dataset": "sklearn digits, multiview",
        "split": split,
        "num_views": num_views,
        "seed": seed,
        "test_fraction": test_fraction,
        "texture_amplitude": TEXTURE_AMPLITUDE,
        "views": {f"m{m}": NUISANCE[m] for m in range(num_views)},
    }
    return MultimodalDataset(data, torch.from_numpy(labels), metadata=metadata)
