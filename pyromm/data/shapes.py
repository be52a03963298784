"""The JNF toy dataset (Senellart & Allassonnière 2025, §4.1 and App. A.4): pairs of 32x32 black-and-white
images, a square (modality "square") and a circle ("circle"), both centred in the image.

The class, full (filled shape, label 1) or empty (2-pixel outline, label 0), is shared by the pair; the two
widths are drawn independently, uniformly in [10, 28] pixels. The paper's 200,000 pairs are split 180,000
train / 20,000 test. Each split is drawn from ``numpy.random.Generator(PCG64([seed, split]))`` for the whole
split, in this order: the labels (a permutation of half full, half empty), the square widths, the circle widths;
so ``limit`` renders a prefix of the full split. Images are stored as uint8 0/255 (batched as 0/1 floats).
"""
from __future__ import annotations

import operator

import numpy as np
import torch
from torch import Tensor

from pyromm.data.dataset import MultimodalDataset

SIDE = 32
MIN_WIDTH, MAX_WIDTH = 10.0, 28.0
OUTLINE = 2.0
SPLIT_SIZES = {"train": 180_000, "test": 20_000}
_SPLIT_IDS = {"train": 0, "test": 1}
_CHUNK = 8192


def _distances() -> dict[str, np.ndarray]:
    """Per modality, the (32, 32) distance of each pixel centre to the image centre whose level sets are the
    shape's outline: Chebyshev for the square, Euclidean for the circle."""
    i, j = np.meshgrid(np.arange(SIDE) - (SIDE - 1) / 2, np.arange(SIDE) - (SIDE - 1) / 2, indexing="ij")
    return {"square": np.maximum(np.abs(i), np.abs(j)), "circle": np.hypot(i, j)}


def render(kind: str, widths: np.ndarray, full: np.ndarray) -> np.ndarray:
    """(N, 1, 32, 32) uint8 images (0/255) of centred shapes ``kind`` ('square' or 'circle') of ``widths``
    pixels: every pixel with d ≤ w/2, and for empty shapes (``full`` False) also d > w/2 − 2."""
    distances = _distances()
    if kind not in distances:
        raise ValueError(f"kind must be one of {sorted(distances)}, got {kind!r}")
    d = distances[kind][None]
    radius = np.asarray(widths, dtype=np.float64)[:, None, None] / 2
    inner = np.where(np.asarray(full, dtype=bool), -1.0, radius[:, 0, 0] - OUTLINE)[:, None, None]
    return ((d <= radius) & (d > inner)).astype(np.uint8)[:, None] * 255


def load_shapes(split: str = "train", seed: int = 0, limit: int | None = None) -> MultimodalDataset:
    """The ``split`` ('train' or 'test') of the toy dataset drawn with ``seed``, its first ``limit`` pairs.

    Modalities "square" and "circle": uint8 (1, 32, 32); labels int64, 1 = full, 0 = empty.
    """
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    seed = operator.index(seed)
    n = SPLIT_SIZES[split]
    if limit is not None:
        if operator.index(limit) < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit}")
        n = min(n, limit)
    rng = np.random.Generator(np.random.PCG64([seed, _SPLIT_IDS[split]]))
    labels = rng.permutation(np.arange(SPLIT_SIZES[split]) % 2)[:n]
    widths = {kind: rng.uniform(MIN_WIDTH, MAX_WIDTH, SPLIT_SIZES[split])[:n] for kind in ("square", "circle")}
    data = {
        kind: torch.from_numpy(
            np.concatenate([render(kind, w[s : s + _CHUNK], labels[s : s + _CHUNK]) for s in range(0, n, _CHUNK)])
        )
        for kind, w in widths.items()
    }
    metadata = {
        "dataset": "JNF toy shapes",
        "split": split,
        "seed": seed,
        "labels": {"0": "empty", "1": "full"},
        "widths": f"uniform in [{MIN_WIDTH:g}, {MAX_WIDTH:g}] pixels, independent per modality",
    }
    return MultimodalDataset(data, torch.from_numpy(labels.astype(np.int64)), metadata=metadata)


def shape_width(images: Tensor) -> Tensor:
    """The width in pixels of the shape in each image ``(N, 1, 32, 32)`` with values in [0, 1]: the number of
    columns holding a pixel > 0.5."""
    return (images.reshape(images.shape[0], SIDE, SIDE) > 0.5).any(dim=1).sum(dim=1)


def is_full(images: Tensor) -> Tensor:
    """Whether the shape in each image ``(N, 1, 32, 32)`` is full: its central 2x2 pixels average > 0.5 (an
    outline of a shape at least 10 pixels wide leaves them empty)."""
    centre = images.reshape(images.shape[0], SIDE, SIDE)[:, SIDE // 2 - 1 : SIDE // 2 + 1, SIDE // 2 - 1 : SIDE // 2 + 1]
    return centre.mean(dim=(1, 2)) > 0.5
