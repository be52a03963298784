"""MHD, the Multimodal Handwritten Digits dataset (Vasco et al., 2022), from its published ``.pt`` files.

``<root>/mhd/mhd_train.pt`` and ``mhd_test.pt`` (fetched by ``nexus_pytorch/scenarios/get_mhd_dataset.sh`` of
https://github.com/miguelsvasco/nexus_pytorch) each hold a ``torch.save``-d tuple ``(labels, images,
trajectories, sounds, trajectory normalisation, sound normalisation)``: labels ``(N,)`` digits (the symbol
modality), images ``(N, 1, 28, 28)``, trajectories ``(N, 200)`` and sound spectrograms ``(N, C, H, W)`` (the
repository's "3x32x32 representation", chunks of one spectrogram). They are
read with ``torch.load(weights_only=True)``, so a file holding anything but tensors and plain containers is
refused. As in the reference loaders, a sound's chunks are joined along their first axis and transposed:
``(C, H, W) -> (1, W, C·H)``. Modalities ``image``, ``trajectory``, ``sound`` (float32) and, on request,
``label`` (the digit one-hot, ``(10,)`` float32); labels: the digits. No md5 is published for these files.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import Tensor

from pyromm.data.dataset import MultimodalDataset
from pyromm.data.files import DataFormatError, TruncatedArrayError, check_file
from pyromm.data.paths import data_root

MHD_DIR = "mhd"
MHD_FILES = {"train": "mhd_train.pt", "test": "mhd_test.pt"}
MHD_SOURCE = (
    "get mhd_train.pt and mhd_test.pt with nexus_pytorch/scenarios/get_mhd_dataset.sh of "
    "https://github.com/miguelsvasco/nexus_pytorch and put them in <root>/mhd/"
)
MODALITIES = ("image", "trajectory", "sound", "label")
NUM_DIGITS = 10
PUBLISHED_MD5: dict[str, str] = {}


def read_mhd(path: str | os.PathLike) -> dict[str, Tensor]:
    """``labels``, ``image``, ``trajectory`` and ``sound`` (joined chunks, ``(N, 1, W, C·H)``) of an MHD file."""
    path = Path(path)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as err:
        raise TruncatedArrayError(f"{path} could not be read as a torch file (truncated or corrupt: {err})") from None
    except pickle.UnpicklingError:
        raise DataFormatError(
            f"{path} is not a torch file holding only tensors and plain containers (torch.load(weights_only=True) "
            "refused it)"
        ) from None
    if not isinstance(content, (tuple, list)) or len(content) < 4 or not all(isinstance(t, Tensor) for t in content[:4]):
        raise DataFormatError(f"{path} must hold a tuple (labels, images, trajectories, sounds, ...) of tensors")
    labels, images, trajectories, sounds = content[:4]
    shapes = {"labels": 1, "images": 4, "trajectories": 2, "sounds": 4}
    for (name, ndim), tensor in zip(shapes.items(), (labels, images, trajectories, sounds)):
        if tensor.ndim != ndim:
            raise DataFormatError(f"{path}: {name} must have {ndim} dimensions, found shape {tuple(tensor.shape)}")
    sizes = {"labels": len(labels), "images": len(images), "trajectories": len(trajectories), "sounds": len(sounds)}
    if len(set(sizes.values())) != 1:
        raise TruncatedArrayError(f"{path}: its arrays hold different numbers of samples {sizes}")
    if labels.is_floating_point() or bool(((labels < 0) | (labels >= NUM_DIGITS)).any()):
        raise DataFormatError(f"{path}: labels must be integer digits 0..9")
    n, c, h, w = sounds.shape
    return {
        "labels": labels.long(),
        "image": images.float(),
        "trajectory": trajectories.float(),
        "sound": sounds.float().reshape(n, c * h, w).transpose(1, 2).unsqueeze(1).contiguous(),
    }


def load_mhd(
    root: str | os.PathLike | None = None,
    split: str = "train",
    *,
    modalities: Sequence[str] = ("image", "trajectory", "sound"),
    checksums: Mapping[str, str] | None = None,
) -> MultimodalDataset:
    """MHD ``split`` ("train" or "test") with the chosen ``modalities`` (from :data:`MODALITIES`)."""
    if split not in MHD_FILES:
        raise ValueError(f"split must be one of {sorted(MHD_FILES)}, got {split!r}")
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ValueError(f"modalities must be a non-empty selection of {MODALITIES}, got {list(modalities)}")
    content = read_mhd(check_file(data_root(root) / MHD_DIR / MHD_FILES[split], MHD_SOURCE, checksums, PUBLISHED_MD5))
    one_hot = torch.nn.functional.one_hot(content["labels"], NUM_DIGITS).float()
    data = {m: one_hot if m == "label" else content[m] for m in modalities}
    return MultimodalDataset(data, content["labels"], metadata={"dataset": "mhd", "split": split})
