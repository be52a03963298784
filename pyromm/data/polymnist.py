"""Deterministic PolyMNIST and Translated PolyMNIST (1 to 5 views) from MNIST and background images.

Recipe (Sutter et al., 2021; translated variant: Daunhawer et al., 2022), drawn from one
``numpy.random.Generator(PCG64(seed))`` in this order, view by view (m = 0, 1, ...):

1. for each class c = 0..9: a permutation of the split's class-c MNIST images. Tuples keep the MNIST
   order of labels: the i-th class-c position of the split holds, in view m, the class-c image at
   position ``perm[i]``, so every MNIST image appears once per view and a tuple shares its label;
2. translated variant only: a paste offset per tuple, all rows then all columns, each in 0..6;
3. a crop corner per tuple in the view's background, all rows then all columns.

One image: the digit (translated: shrunk by bilinear interpolation to 21x21 and pasted at the offset
into a black 28x28 canvas) marks ink where its value is > 128; the 28x28 background crop, scaled to
[0, 1], is inverted (v -> 1 - v) at ink pixels. Stored as uint8, that is 255 - v at ink pixels.
Every draw covers the whole split, so ``limit`` selects a prefix of the full dataset and the first
k views of an M-view dataset equal the k-view dataset with the same seed.
"""
from __future__ import annotations

import json
import numbers
import operator
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from pyromm.data.dataset import MultimodalDataset
from pyromm.data.mnist import MNIST_MD5, load_mnist
from pyromm.data.paths import data_root, verify_md5
from pyromm.files import atomic_open, write_text

POLYMNIST_RELEASE = "https://github.com/thomassutter/MoPoE"
BACKGROUND_DIR = "polymnist_backgrounds"
BACKGROUNDS = (
    ("original/1.jpg", "4b090d72bb9a284ecb253e42ce176437"),
    ("extended/09road-3186188_1280.jpg", "63866992eee1e34867e01bcd5f3e0ae9"),
    ("original/3.jpg", "516c76890aef805be6ef300d17b684f0"),
    ("original/4.jpg", "705d5119408d461a090ed6828d4afbb6"),
    ("original/5.jpg", "7cc42530cd301c376a68241aaa5d08df"),
)
M1_DEVIATION = (
    "view m1 uses extended/09road-3186188_1280.jpg as a stand-in for the original PolyMNIST m1 "
    "background 2.jpg (a scan of Munch's The Scream), which could not be obtained"
)
MAX_VIEWS = len(BACKGROUNDS)
SIZE = 28
SHRUNK = 21
MAX_OFFSET = 6
INK_THRESHOLD = 128
FORMAT_VERSION = 1


def check_num_views(num_views: int) -> int:
    """``num_views`` as an int, or ValueError unless it is an integer in 1..5."""
    if isinstance(num_views, bool) or not isinstance(num_views, numbers.Integral) or not 1 <= num_views <= MAX_VIEWS:
        raise ValueError(f"num_views must be an integer in 1..{MAX_VIEWS}, got {num_views!r}")
    return int(num_views)


def _check_arguments(num_views: int, seed: int, split: str, limit: int | None) -> tuple[int, int]:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be None or >= 1, got {limit}")
    return check_num_views(num_views), operator.index(seed)


def load_background(root: str | os.PathLike | None, view: int) -> np.ndarray:
    """The md5-checked background of view ``view`` as a uint8 (H, W, 3) RGB array."""
    from PIL import Image

    name, md5 = BACKGROUNDS[view]
    path = data_root(root) / BACKGROUND_DIR / name
    if not path.exists():
        raise FileNotFoundError(
            f"PolyMNIST background {path} (view m{view}) is missing. The backgrounds come with the "
            f"PolyMNIST release ({POLYMNIST_RELEASE}); place the file there, or set $PYROMM_DATA / "
            f"pass root=... to a directory holding {BACKGROUND_DIR}/{name}"
        )
    verify_md5(path, md5)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The (n_out, n_in) matrix of 1-D bilinear resampling with half-pixel centres (no antialiasing)."""
    source = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    frac = source - low
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(n_out), high), frac)
    return matrix


def shrink_digits(images: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """uint8 (N, 28, 28) images bilinearly shrunk by 0.75 to (N, 21, 21), rounded half up.

    For this ratio every bilinear weight is a multiple of 1/6, so the interpolation is done exactly
    in integers (scaled by 36) and the result does not depend on floating-point summation order.
    """
    weights = np.rint(6.0 * bilinear_matrix(SIZE, SHRUNK))
    out = np.empty((images.shape[0], SHRUNK, SHRUNK), dtype=np.uint8)
    for start in range(0, images.shape[0], chunk):
        scaled = weights @ images[start : start + chunk].astype(np.float64) @ weights.T
        out[start : start + chunk] = (scaled + 18.0) // 36.0
    return out


def _paste(digits: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Each (21, 21) digit pasted with its top-left corner at (rows[i], cols[i]) into a black 28x28 canvas."""
    n = digits.shape[0]
    span = np.arange(SHRUNK)
    canvas = np.zeros((n, SIZE, SIZE), dtype=np.uint8)
    canvas[np.arange(n)[:, None, None], rows[:, None, None] + span[:, None], cols[:, None, None] + span] = digits
    return canvas


def _compose(digits: np.ndarray, background: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, 28, 28): background crops at (rows, cols), inverted where the digit is > 128."""
    windows = sliding_window_view(background, (SIZE, SIZE), axis=(0, 1))
    crops = windows[rows, cols]
    ink = np.broadcast_to((digits > INK_THRESHOLD)[:, None], crops.shape)
    np.subtract(255, crops, out=crops, where=ink)
    return crops


def pair_within_classes(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Source index of every tuple position: for each class in ascending order, the positions holding
    that class receive a random permutation (drawn from ``rng``) of that class's indices."""
    source = np.empty(labels.shape[0], dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        source[members] = members[rng.permutation(members.shape[0])]
    return source


def generate_polymnist(
    root: str | os.PathLike | None = None,
    num_views: int = 3,
    translated: bool = False,
    seed: int = 0,
    split: str = "train",
    limit: int | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Generate PolyMNIST ``split``: ``num_views`` uint8 arrays (N, 3, 28, 28) and int64 labels (N,).

    ``limit`` keeps only the first ``limit`` tuples (identical to the prefix of the full data).
    Nothing is read from or written to the cache; see :func:`load_polymnist`.
    """
    num_views, seed = _check_arguments(num_views, seed, split, limit)
    backgrounds = [load_background(root, m) for m in range(num_views)]
    images, labels = load_mnist(root, split)
    total = labels.shape[0]
    n = total if limit is None else min(limit, total)
    shrunk = shrink_digits(images) if translated else None
    rng = np.random.Generator(np.random.PCG64(seed))
    views = []
    for background in backgrounds:
        source = pair_within_classes(rng, labels)[:n]
        if translated:
            shift_rows = rng.integers(0, MAX_OFFSET + 1, total)[:n]
            shift_cols = rng.integers(0, MAX_OFFSET + 1, total)[:n]
            digits = _paste(shrunk[source], shift_rows, shift_cols)
        else:
            digits = images[source]
        crop_rows = rng.integers(0, background.shape[0] - SIZE + 1, total)[:n]
        crop_cols = rng.integers(0, background.shape[1] - SIZE + 1, total)[:n]
        views.append(_compose(digits, background, crop_rows, crop_cols))
    return views, labels[:n].copy()


def polymnist_metadata(num_views: int = 3, translated: bool = False, seed: int = 0) -> dict[str, Any]:
    """JSON-able description of a generated PolyMNIST (split-independent): recipe, seed, sources, md5s."""
    num_views, seed = _check_arguments(num_views, seed, "train", None)
    metadata: dict[str, Any] = {
        "dataset": "Translated PolyMNIST" if translated else "PolyMNIST",
        "variant": _variant(translated),
        "num_views": num_views,
        "seed": seed,
        "rng": "numpy.random.Generator(numpy.random.PCG64(seed))",
        "format_version": FORMAT_VERSION,
        "views": {
            f"m{m}": {"background": f"{BACKGROUND_DIR}/{BACKGROUNDS[m][0]}", "md5": BACKGROUNDS[m][1]}
            for m in range(num_views)
        },
        "deviations": [M1_DEVIATION] if num_views > 1 else [],
        "mnist_md5": dict(MNIST_MD5),
        "ink_threshold": INK_THRESHOLD,
        "source": POLYMNIST_RELEASE,
    }
    if translated:
        metadata["translation"] = {"shrunk_size": SHRUNK, "resize": "bilinear, half-pixel centres, rounded half up",
                                   "offsets": f"row then column, uniform in 0..{MAX_OFFSET}"}
    return metadata


def _variant(translated: bool) -> str:
    return "translated_polymnist" if translated else "polymnist"


def polymnist_cache_dir(
    root: str | os.PathLike | None = None, num_views: int = 3, translated: bool = False, seed: int = 0
) -> Path:
    """The cache directory ``<root>/polymnist/<variant>_<M>views_seed<seed>``."""
    return data_root(root) / "polymnist" / f"{_variant(translated)}_{num_views}views_seed{seed}"


def _cache_files(directory: Path, split: str, num_views: int) -> list[Path]:
    return [directory / f"{split}_m{m}.npy" for m in range(num_views)] + [directory / f"{split}_labels.npy"]


def _read_cache(directory: Path, split: str, metadata: dict[str, Any]) -> tuple[list[np.ndarray], np.ndarray] | None:
    meta_path = directory / "metadata.json"
    files = _cache_files(directory, split, metadata["num_views"])
    if not meta_path.exists() or not all(f.exists() for f in files):
        return None
    try:
        if json.loads(meta_path.read_text()) != metadata:
            return None
        arrays = [_load_array(f) for f in files]
    except (OSError, ValueError) as err:
        warnings.warn(f"PolyMNIST cache in {directory} cannot be read ({err}); generating the {split!r} split again",
                      stacklevel=3)
        return None
    views, labels = arrays[:-1], arrays[-1]
    n = labels.shape[0]
    if labels.dtype != np.int64 or any(v.dtype != np.uint8 or v.shape != (n, 3, SIZE, SIZE) for v in views):
        return None
    return views, labels


def _load_array(path: Path) -> np.ndarray:
    """``np.load`` without pickles; a ValueError names ``path`` (an object array, a truncated file)."""
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _write_cache(directory: Path, split: str, metadata: dict[str, Any], views: list[np.ndarray], labels: np.ndarray) -> None:
    """Each array, then the metadata, written atomically (``pyromm.files``)."""
    for path, array in zip(_cache_files(directory, split, len(views)), [*views, labels]):
        with atomic_open(path, "wb") as f:
            np.save(f, array, allow_pickle=False)
    write_text(directory / "metadata.json", json.dumps(metadata, indent=2, sort_keys=True))


def load_polymnist(
    root: str | os.PathLike | None = None,
    split: str = "train",
    num_views: int = 3,
    translated: bool = False,
    seed: int = 0,
    limit: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> MultimodalDataset:
    """PolyMNIST ``split`` as a dataset with modalities "m0".."m{M-1}" (uint8 (3, 28, 28)) and labels.

    Loads ``<cache_dir or root>/polymnist/<variant>_<M>views_seed<seed>/`` if it holds this split,
    else generates it and, when ``limit`` is None, caches it there (with a warning if that fails).
    ``limit`` keeps the first ``limit`` tuples.
    """
    num_views, seed = _check_arguments(num_views, seed, split, limit)
    metadata = polymnist_metadata(num_views, translated, seed)
    directory = polymnist_cache_dir(root if cache_dir is None else cache_dir, num_views, translated, seed)
    cached = _read_cache(directory, split, metadata)
    if cached is not None:
        views, labels = [v[:limit] for v in cached[0]], cached[1][:limit]
    else:
        views, labels = generate_polymnist(root, num_views, translated, seed, split, limit)
        if limit is None:
            try:
                _write_cache(directory, split, metadata, views, labels)
            except OSError as err:
                warnings.warn(f"could not cache PolyMNIST in {directory}: {err}", stacklevel=2)
    return MultimodalDataset(
        {f"m{m}": torch.from_numpy(np.ascontiguousarray(v)) for m, v in enumerate(views)},
        torch.from_numpy(np.ascontiguousarray(labels)),
        metadata={**metadata, "split": split, "num_samples": int(labels.shape[0]), "cache_dir": str(directory)},
    )
