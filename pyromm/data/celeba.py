"""Bimodal CelebA (Sutter et al., 2020): a face image and a character-level text of its attributes.

Files of the CelebA release (Liu et al., 2015; https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) in
``<root>/celeba/``:

* ``img_align_celeba/<id>.jpg``: aligned 178x218 faces;
* ``list_attr_celeba.txt``: line 1 the number of images N, line 2 the 40 attribute names, then N lines
  ``<id>.jpg v_1 ... v_40`` with v = 1 (present) or −1 (absent), fields separated by runs of spaces;
* ``list_eval_partition.txt``: lines ``<id>.jpg p`` with p = 0 (train), 1 (val), 2 (test).

The two lists are md5-checked against the release's published md5s (torchvision's list).

Modalities: ``image`` ``(3, size, size)`` uint8, the central ``crop`` x ``crop`` square resized bilinearly
(148 → 64 in the MMVM code); ``text`` ``(256,)`` long, the attribute text of :mod:`pyromm.data.text`. One
``numpy.random.default_rng(seed)`` draws, image by image in file order over the whole list (so a sample's
text does not depend on the split or limit asked for), first the attribute order, then the start offset.
Labels: ``(N, 40)`` long, 1 where the attribute is present.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from pyromm.data.dataset import MultimodalDataset
from pyromm.data.files import DataFormatError, TruncatedArrayError, check_file, require_file
from pyromm.data.paths import data_root
from pyromm.data.text import CELEBA_TEXT_LENGTH, attribute_text, encode_chars, random_offset

CELEBA_DIR = "celeba"
IMAGE_DIR = "img_align_celeba"
ATTRIBUTES_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
CELEBA_MD5 = {ATTRIBUTES_FILE: "75e246fa4810816ffd6ee81facbd244c", PARTITION_FILE: "d32c9cbf5e040fd4025c592c306e6668"}
CELEBA_SOURCE = (
    "download the aligned images (img_align_celeba.zip, unzipped) and the annotation lists from "
    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html into <root>/celeba/"
)
SPLITS = {"train": 0, "val": 1, "test": 2}
CROP, SIZE = 148, 64


def read_attributes(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """(image file names, attribute names, presence ``(N, A)`` bool) from ``list_attr_celeba.txt``."""
    lines = Path(path).read_text().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DataFormatError(f"{path}: expected the image count on line 1 and the attribute names on line 2")
    count, names = int(lines[0]), lines[1].split()
    rows = [line.split() for line in lines[2:] if line.strip()]
    if len(rows) < count:
        raise TruncatedArrayError(f"{path} lists {len(rows)} images, its first line announces {count}")
    files, values = [], []
    for number, row in enumerate(rows[:count], start=3):
        if len(row) != len(names) + 1 or any(v not in ("1", "-1") for v in row[1:]):
            raise DataFormatError(
                f"{path} line {number}: expected a file name and {len(names)} values of 1 or -1, found {row}"
            )
        files.append(row[0])
        values.append([v == "1" for v in row[1:]])
    return files, names, np.array(values, dtype=bool).reshape(count, len(names))


def read_partition(path: str | os.PathLike, files: list[str]) -> np.ndarray:
    """The partition (0, 1, 2) of each of ``files``, from ``list_eval_partition.txt``."""
    partition: dict[str, int] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DataFormatError(f"{path} line {number}: expected '<file> 0|1|2', found {line!r}")
        partition[fields[0]] = int(fields[1])
    missing = [f for f in files if f not in partition]
    if missing:
        raise TruncatedArrayError(f"{path} gives no partition for {len(missing)} images, the first {missing[0]}")
    return np.array([partition[f] for f in files], dtype=np.int64)


def read_face(path: Path, crop: int = CROP, size: int = SIZE) -> np.ndarray:
    """``(3, size, size)`` uint8: the central ``crop`` x ``crop`` square of the image, resized bilinearly."""
    from PIL import Image

    require_file(path, CELEBA_SOURCE)
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except OSError as err:
        raise TruncatedArrayError(f"{path} could not be decoded (truncated or corrupt: {err})") from None
    width, height = rgb.size
    if width < crop or height < crop:
        raise DataFormatError(f"{path} is {width}x{height}, smaller than the {crop}x{crop} crop")
    left, top = (width - crop) // 2, (height - crop) // 2
    square = rgb.crop((left, top, left + crop, top + crop)).resize((size, size), Image.BILINEAR)
    return np.asarray(square, dtype=np.uint8).transpose(2, 0, 1)


def attribute_codes(names: list[str], presence: np.ndarray, seed: int, length: int = CELEBA_TEXT_LENGTH) -> torch.Tensor:
    """``(N, length)`` long: per image in order, its attribute string (shuffled, cut to ``length``) written from a
    random start offset; both draws from one ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    rows = []
    for present in presence:
        text = attribute_text(names, present, rng)[:length]
        rows.append(encode_chars(text, length, random_offset(len(text), length, rng)))
    return torch.stack(rows)


def load_celeba(
    root: str | os.PathLike | None = None,
    split: str = "train",
    *,
    limit: int | None = None,
    seed: int = 0,
    crop: int = CROP,
    size: int = SIZE,
    checksums: Mapping[str, str] | None = None,
) -> MultimodalDataset:
    """Bimodal CelebA ``split`` ("train", "val", "test"), the first ``limit`` images of it when given."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    directory = data_root(root) / CELEBA_DIR
    attributes = check_file(directory / ATTRIBUTES_FILE, CELEBA_SOURCE, checksums, CELEBA_MD5)
    partition_file = check_file(directory / PARTITION_FILE, CELEBA_SOURCE, checksums, CELEBA_MD5)
    files, names, presence = read_attributes(attributes)
    codes = attribute_codes(names, presence, seed)
    chosen = np.flatnonzero(read_partition(partition_file, files) == SPLITS[split])[:limit]
    if len(chosen) == 0:
        raise DataFormatError(f"{partition_file} assigns no image to split {split!r}")
    images = np.stack([read_face(directory / IMAGE_DIR / files[i], crop, size) for i in chosen])
    data = {"image": torch.from_numpy(images), "text": codes[torch.from_numpy(chosen)]}
    metadata = {"dataset": "celeba", "split": split, "seed": seed, "crop": crop, "size": size, "attributes": names}
    return MultimodalDataset(data, torch.from_numpy(presence[chosen].astype(np.int64)), metadata=metadata)
