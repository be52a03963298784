"""PolyMNIST as released by its authors: PNG files instead of the arrays pyromm generates.

Layout of ``<root>/<split>/m<k>/<i>.<label>.png`` (``split`` ``train`` or ``test``, k = 0..4): tuple i of a split is
the file ``<i>.<label>.png`` of every view folder, a 28x28 RGB image, and ``label`` its digit. Every view holds the
same file names. Images are read with Pillow as uint8 RGB, channels first (as pyromm's generated PolyMNIST), in the
order of i.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pyromm.data.dataset import MultimodalDataset
from pyromm.data.files import DataFormatError, MissingDataError

FILE_NAME = re.compile(r"^(\d+)\.(\d)\.png$")


def load_released_polymnist(root: str | os.PathLike, split: str, num_views: int) -> MultimodalDataset:
    """The released ``split`` of ``num_views`` views (m0..m{num_views-1}) under ``root``, with its labels."""
    directory = Path(root) / split
    names = _file_names(directory / "m0")
    views = {}
    for m in range(num_views):
        folder = directory / f"m{m}"
        found = _file_names(folder)
        if found != names:
            missing = sorted(set(names) - set(found)) or sorted(set(found) - set(names))
            raise DataFormatError(
                f"{folder} and {directory / 'm0'} hold different files (first difference: {missing[0]}); every view "
                "of the released PolyMNIST holds the same <index>.<label>.png names"
            )
        views[f"m{m}"] = torch.from_numpy(np.stack([_read_image(folder / name) for name in names]))
    labels = torch.tensor([int(FILE_NAME.match(name).group(2)) for name in names])
    return MultimodalDataset(views, labels, metadata={"dataset": "polymnist", "source": "released", "split": split,
                                                      "root": str(root), "num_views": num_views})


def _file_names(folder: Path) -> list[str]:
    """The ``<index>.<label>.png`` names of ``folder``, by index; other files are an error naming them."""
    if not folder.is_dir():
        raise MissingDataError(f"no folder {folder}: the released PolyMNIST unpacks to <root>/train|test/m0..m4/")
    names = sorted(p.name for p in folder.iterdir())
    if not names:
        raise DataFormatError(f"{folder} holds no image")
    wrong = [n for n in names if not FILE_NAME.match(n)]
    if wrong:
        raise DataFormatError(f"{folder / wrong[0]} is not named <index>.<label>.png, as the released PolyMNIST's are")
    return sorted(names, key=lambda n: int(FILE_NAME.match(n).group(1)))


def _read_image(path: Path) -> np.ndarray:
    """(3, 28, 28) uint8 RGB."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if pixels.shape != (28, 28, 3):
        raise DataFormatError(f"{path} is a {pixels.shape[1]}x{pixels.shape[0]} image; the released PolyMNIST's are 28x28")
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
