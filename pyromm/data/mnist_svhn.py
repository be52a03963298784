"""MNIST-SVHN (Shi et al., 2019): pairs of an MNIST and an SVHN image showing the same digit.

SVHN (cropped digits, "format 2"), http://ufldl.stanford.edu/housenumbers/, in ``<root>/svhn/``:
``train_32x32.mat`` (73,257 digits) and ``test_32x32.mat`` (26,032), MATLAB v5 files holding
``X: (32, 32, 3, N)`` uint8 and ``y: (N, 1)`` labels 1..10, where 10 stands for the digit 0. The md5s are
the ones SVHN loaders check (torchvision's list); missing files are downloaded from the site and checked.
MNIST comes from :func:`pyromm.data.mnist.load_mnist` (``<root>/mnist/``).

Pairing (the procedure of the MMVAE code, ``bin/make-mnist-svhn-idx.py``, with an explicit seed): for each
digit d = 0..9, take the first n_d = min(#MNIST_d, #SVHN_d, ``max_per_class``) images of digit d of each
dataset (file order); then ``multiplier`` times, pair a random permutation of those MNIST images position
by position with a random permutation of those SVHN images. Every selected MNIST image thus meets
``multiplier`` SVHN images of its digit. The draws come from one ``numpy.random.default_rng(seed)``, digit
by digit, the MNIST permutation before the SVHN one. Pairs are stored as uint8 images (3,856 bytes a pair:
about 6.5 GB for the training split with the reference ``multiplier=30``; pass a smaller one to save memory).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from pyromm.data.dataset import MultimodalDataset
from pyromm.data.files import DataFormatError, TruncatedArrayError, check_file
from pyromm.data.mnist import load_mnist
from pyromm.data.paths import data_root, ensure_file

SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
SVHN_DIR = "svhn"
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
SVHN_MD5 = {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373", "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"}
SVHN_SOURCE = f"download it from {SVHN_URL} into <root>/{SVHN_DIR}/"
MULTIPLIER = 30
MAX_PER_CLASS = 10000


def svhn_file(
    root: str | os.PathLike | None, split: str, checksums: Mapping[str, str] | None = None, download: bool = True
) -> Path:
    """The checked path of SVHN's ``split`` file; downloaded first when missing, its md5 is known and ``download``."""
    if split not in SVHN_FILES:
        raise ValueError(f"split must be one of {sorted(SVHN_FILES)}, got {split!r}")
    name = SVHN_FILES[split]
    path = data_root(root) / SVHN_DIR / name
    md5 = (SVHN_MD5 if checksums is None else checksums).get(name)
    if download and md5 is not None and not path.exists():
        return ensure_file(path, md5, [SVHN_URL + name])
    return check_file(path, SVHN_SOURCE, checksums, SVHN_MD5)


def read_svhn_mat(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and digit labels ``(N,)`` int64 (10 → 0) from an SVHN ``.mat`` file."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        content = loadmat(path)
    except (MatReadError, OSError, ValueError, IndexError) as err:
        raise TruncatedArrayError(f"{path} could not be read as a MATLAB file (truncated or corrupt: {err})") from None
    if "X" not in content or "y" not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DataFormatError(f"{path} must hold the arrays X and y, found {found}")
    images, labels = content["X"], np.asarray(content["y"]).reshape(-1)
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.dtype != np.uint8:
        raise DataFormatError(f"{path}: X must be (32, 32, 3, N) uint8, found {images.shape} {images.dtype}")
    if images.shape[3] != labels.shape[0]:
        raise TruncatedArrayError(f"{path}: X holds {images.shape[3]} images but y {labels.shape[0]} labels")
    if ((labels < 1) | (labels > 10)).any():
        raise DataFormatError(f"{path}: y must hold labels 1..10, found {np.unique(labels)}")
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)), labels.astype(np.int64) % 10


def load_svhn(
    root: str | os.PathLike | None = None,
    split: str = "train",
    checksums: Mapping[str, str] | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """SVHN ``split`` as uint8 images ``(N, 3, 32, 32)`` and int64 digits ``(N,)``."""
    return read_svhn_mat(svhn_file(root, split, checksums, download))


def pair_by_label(
    labels_a: np.ndarray,
    labels_b: np.ndarray,
    multiplier: int = MULTIPLIER,
    max_per_class: int = MAX_PER_CLASS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(idx_a, idx_b)`` with ``labels_a[idx_a] == labels_b[idx_b]`` (see the module docstring)."""
    if multiplier < 1 or max_per_class < 1:
        raise ValueError(f"multiplier and max_per_class must be >= 1, got {multiplier} and {max_per_class}")
    rng = np.random.default_rng(seed)
    pairs_a, pairs_b = [], []
    for label in np.unique(labels_a):
        members_a, members_b = np.flatnonzero(labels_a == label), np.flatnonzero(labels_b == label)
        n = min(len(members_a), len(members_b), max_per_class)
        for _ in range(multiplier):
            pairs_a.append(members_a[:n][rng.permutation(n)])
            pairs_b.append(members_b[:n][rng.permutation(n)])
    return np.concatenate(pairs_a), np.concatenate(pairs_b)


def load_mnist_svhn(
    root: str | os.PathLike | None = None,
    split: str = "train",
    *,
    multiplier: int = MULTIPLIER,
    max_per_class: int = MAX_PER_CLASS,
    seed: int = 0,
    checksums: Mapping[str, str] | None = None,
    download: bool = True,
) -> MultimodalDataset:
    """MNIST-SVHN ``split``: uint8 modalities ``mnist`` ``(N, 1, 28, 28)`` and ``svhn`` ``(N, 3, 32, 32)``, digit
    labels."""
    mnist_images, mnist_labels = load_mnist(root, split)
    svhn_images, svhn_labels = load_svhn(root, split, checksums, download)
    idx_mnist, idx_svhn = pair_by_label(mnist_labels, svhn_labels, multiplier, max_per_class, seed)
    if len(idx_mnist) == 0:
        raise DataFormatError("MNIST and SVHN share no digit: no pair can be formed")
    data = {
        "mnist": torch.from_numpy(mnist_images[idx_mnist][:, None]),
        "svhn": torch.from_numpy(svhn_images[idx_svhn]),
    }
    metadata = {
        "dataset": "mnist_svhn",
        "split": split,
        "seed": seed,
        "multiplier": multiplier,
        "max_per_class": max_per_class,
        "pairing": "MMVAE bin/make-mnist-svhn-idx.py procedure, seeded numpy Generator",
    }
    return MultimodalDataset(data, torch.from_numpy(mnist_labels[idx_mnist]), metadata=metadata)
