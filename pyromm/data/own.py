"""Your own data (``dataset = "files"``): an ``.npz`` file or a directory of ``.npy``/``.pt`` files as train and test
:class:`MultimodalDataset` splits, checked against the likelihoods of ``RunConfig.modalities``.

Layout: one array per modality, named by the modality, of shape ``(N, *event_shape)``; optional ``labels``
(``(N,)`` integer class labels, needed by the evaluation) and ``mask_<modality>`` (``(N,)`` bool, True = observed).
A directory holds one file per array, ``<name>.npy`` or ``<name>.pt`` (``.pt``: one tensor, read with
``torch.load(weights_only=True)``). HDF5 is not read, as h5py is not a pyromm dependency: save its arrays with
``np.savez``. A seeded random ``test_fraction`` of the samples (seed 0) is the test split.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
import torch
from torch import Tensor

from pyromm.data.dataset import DataValidationError, MultimodalDataset
from pyromm.data.files import load_npy
from pyromm.data.paths import md5sum
from pyromm.modality_options import ModalityOptions, modality_options

if TYPE_CHECKING:
    from pyromm.config import RunConfig

LABELS = "labels"
MASK_PREFIX = "mask_"
SPLIT_SEED = 0


class OwnDataError(DataValidationError):
    """A data file does not hold what the config names: a missing modality, mismatched lengths, bad labels or masks,
    or values its likelihood cannot score."""


class DtypeWarning(UserWarning):
    """A modality's array was converted to the dtype its likelihood scores: float32, or int64 class indices."""


def read_arrays(path: str | Path) -> dict[str, np.ndarray | Tensor]:
    """The arrays of an ``.npz`` file, or of the ``.npy``/``.pt`` files of a directory, by name."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "data file or directory not found (dataset 'files', data_path)", str(path))
    if path.is_file():
        if path.suffix != ".npz":
            raise OwnDataError(f"{path}: expected an .npz file or a directory of .npy/.pt files")
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    arrays: dict[str, np.ndarray | Tensor] = {}
    for file in sorted(path.iterdir()):
        if file.suffix not in (".npy", ".pt"):
            continue
        if file.stem in arrays:
            raise OwnDataError(f"{path}: array {file.stem!r} is in both {file.stem}.npy and {file.stem}.pt; keep one")
        arrays[file.stem] = load_npy(file) if file.suffix == ".npy" else _load_tensor(file)
    if not arrays:
        raise OwnDataError(f"{path}: the directory holds no .npy or .pt file")
    return arrays


def _load_tensor(file: Path) -> Tensor:
    try:
        value = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is no weights-only tensor
        raise OwnDataError(f"{file}: not readable with torch.load(weights_only=True): {err}") from None
    if not isinstance(value, Tensor):
        raise OwnDataError(f"{file}: holds a {type(value).__name__}, expected one tensor")
    return value


def load_files(cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
    """The (train, test) splits of ``cfg.data_path``: the modalities of ``cfg.modalities`` (all arrays other than
    labels and masks when it is None), float32, with their labels and masks; ``cfg.test_fraction`` of the samples
    (at least one, seed 0) are the test split."""
    path = Path(cfg.data_path)
    arrays = {name: torch.as_tensor(value) for name, value in read_arrays(path).items()}
    options = modality_options(cfg)
    names = list(options) or [n for n in arrays if n != LABELS and not n.startswith(MASK_PREFIX)]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise OwnDataError(
            f"{path}: no array {missing[0]!r} for modality {missing[0]!r} named in the config; it holds {sorted(arrays)}"
        )
    if not names:
        raise OwnDataError(f"{path}: no modality array, only {sorted(arrays)}")
    lengths = {n: arrays[n].shape[0] if arrays[n].dim() else 0 for n in names}
    if len(set(lengths.values())) != 1:
        raise OwnDataError(f"{path}: the modality arrays have different lengths (samples): {lengths}")
    n = lengths[names[0]]
    data = {name: _modality_data(path, name, arrays[name], options.get(name, ModalityOptions()), cfg) for name in names}
    labels = _labels(path, arrays[LABELS], n) if LABELS in arrays else None
    masks = _masks(path, arrays, names, n)
    dataset = MultimodalDataset(data, labels, masks, metadata={"dataset": "files", "path": str(path)})
    n_test = max(1, round(cfg.test_fraction * n))
    if n_test >= n:
        raise OwnDataError(f"{path}: test_fraction={cfg.test_fraction} of {n} samples leaves no training sample")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return dataset.subset(order[n_test:].sort().values), dataset.subset(order[:n_test].sort().values)


def _modality_data(path: Path, name: str, x: Tensor, options: ModalityOptions, cfg: RunConfig) -> Tensor:
    """``x`` in the dtype its likelihood scores (float32; int64 class indices for 'categorical'), a DtypeWarning
    naming the modality when converted, and checked against that likelihood's range."""
    if x.dim() < 2:
        raise OwnDataError(f"{path}: modality {name!r} has shape {tuple(x.shape)}; expected (N, *event_shape)")
    likelihood = options.likelihood or cfg.likelihood
    if likelihood == "categorical":
        return _class_indices(path, name, x, options.num_classes)
    x = _converted(path, name, x, torch.float32)
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        sample = int((~finite).reshape(x.shape[0], -1).any(1).nonzero()[0])
        raise OwnDataError(f"{path}: modality {name!r} contains NaN or inf (first at sample {sample})")
    low, high = float(x.min()), float(x.max())
    if likelihood == "bernoulli" and (low < 0.0 or high > 1.0):
        raise OwnDataError(
            f"{path}: modality {name!r}: likelihood 'bernoulli' needs values in [0, 1], the data span "
            f"[{low:g}, {high:g}] (rescale them, or choose likelihood 'normal' or 'laplace')"
        )
    return x


def _class_indices(path: Path, name: str, x: Tensor, num_classes: int) -> Tensor:
    """Integer data of a 'categorical' modality as int64, each in 0..num_classes-1."""
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise OwnDataError(
            f"{path}: modality {name!r}: likelihood 'categorical' needs integer class indices, the data are "
            f"{str(x.dtype).removeprefix('torch.')} (store them as integers, or choose likelihood 'normal' or 'laplace')"
        )
    x = _converted(path, name, x, torch.int64)
    low, high = int(x.min()), int(x.max())
    if low < 0 or high >= num_classes:
        raise OwnDataError(
            f"{path}: modality {name!r}: likelihood 'categorical' with num_classes {num_classes} needs class indices "
            f"in 0..{num_classes - 1}, the data span {low}..{high}"
        )
    return x


def _converted(path: Path, name: str, x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x`` as ``dtype``, with a DtypeWarning naming the file and the modality when it was another dtype."""
    if x.dtype == dtype:
        return x
    warnings.warn(
        f"{path}: modality {name!r} is {str(x.dtype).removeprefix('torch.')}; converted to "
        f"{str(dtype).removeprefix('torch.')} (values kept)",
        DtypeWarning,
        stacklevel=4,
    )
    return x.to(dtype)


def _labels(path: Path, labels: Tensor, n: int) -> Tensor:
    if labels.shape != (n,):
        raise OwnDataError(f"{path}: labels have shape {tuple(labels.shape)}, expected ({n},), one per sample")
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise OwnDataError(f"{path}: labels are {labels.dtype}, expected integer class indices 0..K-1")
    if bool((labels < 0).any()):
        raise OwnDataError(f"{path}: labels must be class indices >= 0, found {int(labels.min())}")
    return labels.long()


def _masks(path: Path, arrays: Mapping[str, Tensor], names: list[str], n: int) -> dict[str, Tensor] | None:
    masks = {}
    for key, value in arrays.items():
        if not key.startswith(MASK_PREFIX):
            continue
        name = key[len(MASK_PREFIX):]
        if name not in names:
            raise OwnDataError(f"{path}: {key!r} masks no modality of the config; modalities are {names}")
        if value.shape != (n,):
            raise OwnDataError(f"{path}: {key!r} has shape {tuple(value.shape)}, expected ({n},), one per sample")
        if value.dtype != torch.bool and not bool(((value == 0) | (value == 1)).all()):
            raise OwnDataError(f"{path}: {key!r} must be bool or 0/1 (1 = observed)")
        masks[name] = value.to(torch.bool)
    return masks or None


def fingerprint(path: str | Path) -> str:
    """A short md5 of the data at ``path`` (for a directory: of its files' names and md5s), so that caches keyed
    by it never mix two datasets."""
    path = Path(path)
    if path.is_file():
        return md5sum(path)[:12]
    digest = hashlib.md5()
    for file in sorted(path.iterdir()):
        if file.suffix in (".npy", ".pt"):
            digest.update(f"{file.name}:{md5sum(file)};".encode())
    return digest.hexdigest()[:12]
