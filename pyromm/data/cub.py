"""CUB image-captions (Shi et al., 2019): a bird image and one of its ten captions, in the layout of the
MMVAE / MMVAE+ CUB data (http://www.robots.ox.ac.uk/~yshi/mmdgm/datasets/cub.zip, unzipped to ``<root>/cub/``):

* ``train/<NNN.Class_name>/*.jpg`` and ``test/<NNN.Class_name>/*.jpg``: the images, one folder per class
  (train and test classes are disjoint);
* ``text_trainvalclasses.txt`` and ``text_testclasses.txt``: one caption per line, ten per image, in the
  order of the images sorted by class folder, then by file name.

A sample is one caption with its image (10 samples per image, as the MMVAE code resamples images).
Modalities: ``image`` ``(3, 64, 64)`` uint8, the whole image resized bilinearly; ``caption`` ``(32,)`` long,
encoded with the vocabulary built from the training captions (:class:`pyromm.data.text.Vocabulary`).
Labels: the class, NNN − 1 in 0..199. No md5 is published for these files.
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
from pyromm.data.text import CAPTION_LENGTH, Vocabulary

CUB_DIR = "cub"
CUB_URL = "http://www.robots.ox.ac.uk/~yshi/mmdgm/datasets/cub.zip"
CUB_SOURCE = f"download {CUB_URL} (the MMVAE CUB data) and unzip it into <root>/ (giving <root>/cub/)"
CAPTION_FILES = {"train": "text_trainvalclasses.txt", "test": "text_testclasses.txt"}
CAPTIONS_PER_IMAGE = 10
SIZE = 64
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PUBLISHED_MD5: dict[str, str] = {}


def image_paths(directory: Path) -> tuple[list[Path], np.ndarray]:
    """The images under ``directory/<NNN.Class>/`` sorted by folder then file name, and their classes NNN − 1."""
    require_file(directory, CUB_SOURCE)
    paths, labels = [], []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        number = folder.name.split(".", 1)[0]
        if not number.isdigit():
            raise DataFormatError(f"class folder {folder} must be named '<number>.<class name>'")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [int(number) - 1] * len(files)
    if not paths:
        raise DataFormatError(f"{directory} holds no class folder with images")
    return paths, np.array(labels, dtype=np.int64)


def read_captions(path: Path, num_images: int) -> list[str]:
    """The ``10 · num_images`` captions of ``path``, one per non-empty line."""
    captions = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    expected = CAPTIONS_PER_IMAGE * num_images
    if len(captions) < expected:
        raise TruncatedArrayError(f"{path} holds {len(captions)} captions, {num_images} images need {expected}")
    if len(captions) > expected:
        raise DataFormatError(f"{path} holds {len(captions)} captions, more than the {expected} of {num_images} images")
    return captions


def read_bird(path: Path, size: int = SIZE) -> np.ndarray:
    """``(3, size, size)`` uint8: the image resized bilinearly."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.BILINEAR)
    except OSError as err:
        raise TruncatedArrayError(f"{path} could not be decoded (truncated or corrupt: {err})") from None
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def cub_vocabulary(root: str | os.PathLike | None = None, checksums: Mapping[str, str] | None = None) -> Vocabulary:
    """The caption vocabulary, built from the training captions."""
    path = check_file(data_root(root) / CUB_DIR / CAPTION_FILES["train"], CUB_SOURCE, checksums, PUBLISHED_MD5)
    return Vocabulary.build(line for line in path.read_text().splitlines() if line.strip())


def load_cub(
    root: str | os.PathLike | None = None,
    split: str = "train",
    *,
    size: int = SIZE,
    checksums: Mapping[str, str] | None = None,
) -> MultimodalDataset:
    """CUB image-captions ``split`` ("train" or "test"): one sample per caption."""
    if split not in CAPTION_FILES:
        raise ValueError(f"split must be one of {sorted(CAPTION_FILES)}, got {split!r}")
    directory = data_root(root) / CUB_DIR
    vocabulary = cub_vocabulary(root, checksums)
    paths, classes = image_paths(directory / split)
    caption_file = check_file(directory / CAPTION_FILES[split], CUB_SOURCE, checksums, PUBLISHED_MD5)
    captions = read_captions(caption_file, len(paths))
    images = torch.from_numpy(np.stack([read_bird(p, size) for p in paths]))
    repeat = torch.arange(len(paths)).repeat_interleave(CAPTIONS_PER_IMAGE)
    data = {"image": images[repeat], "caption": vocabulary.encode_all(captions, CAPTION_LENGTH)}
    metadata = {"dataset": "cub", "split": split, "size": size, "vocabulary": vocabulary.words}
    return MultimodalDataset(data, torch.from_numpy(classes).repeat_interleave(CAPTIONS_PER_IMAGE), metadata=metadata)
