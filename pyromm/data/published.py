"""The published datasets ``pyromm data prepare|list`` handle: their files, where they come from, and a check
that they load. Only SVHN has an official URL with known md5s, so only SVHN is downloaded; for the others
``prepare`` names the missing files and where to get them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pyromm.data import celeba, cub, mhd, mnist_svhn, rats
from pyromm.data.files import MissingDataError
from pyromm.data.paths import ensure_file, md5sum, verify_md5

Report = Callable[[str], None]


@dataclass(frozen=True)
class PublishedFile:
    """A file (or, with ``folder``, a folder of files) at ``path`` under the data root."""

    path: str
    md5: str | None = None
    url: str | None = None
    folder: bool = False


@dataclass(frozen=True)
class PublishedDataset:
    name: str
    source: str
    files: tuple[PublishedFile, ...]
    check: Callable[[Path], list[str]]


def _check_rats(root: Path) -> list[str]:
    dataset = rats.load_rats(root, "all")
    counts = dataset.metadata["trials_per_odour"]
    return [f"rats: {len(dataset)} samples of {len(rats.RATS)} rats, paired trials per odour 0..3: {counts}"]


def _check_mnist_svhn(root: Path) -> list[str]:
    from pyromm.data.mnist import load_mnist

    lines = []
    for split in ("train", "test"):
        _, svhn_labels = mnist_svhn.load_svhn(root, split)
        _, mnist_labels = load_mnist(root, split)
        pairs, _ = mnist_svhn.pair_by_label(mnist_labels, svhn_labels)
        lines.append(
            f"mnist_svhn {split}: {len(svhn_labels)} SVHN digits, {len(pairs)} pairs (multiplier {mnist_svhn.MULTIPLIER})"
        )
    return lines


def _check_celeba(root: Path) -> list[str]:
    directory = root / celeba.CELEBA_DIR
    files, names, _ = celeba.read_attributes(directory / celeba.ATTRIBUTES_FILE)
    partition = celeba.read_partition(directory / celeba.PARTITION_FILE, files)
    absent = [f for f in files if not (directory / celeba.IMAGE_DIR / f).is_file()]
    if absent:
        raise MissingDataError(
            f"{len(absent)} of {len(files)} CelebA images are missing from {directory / celeba.IMAGE_DIR}, the first "
            f"{absent[0]}; {celeba.CELEBA_SOURCE}"
        )
    lines = []
    for split, code in celeba.SPLITS.items():
        members = np.flatnonzero(partition == code)
        if len(members):
            celeba.read_face(directory / celeba.IMAGE_DIR / files[members[0]])
        lines.append(f"celeba {split}: {len(members)} images, {len(names)} attributes")
    return lines


def _check_cub(root: Path) -> list[str]:
    directory = root / cub.CUB_DIR
    vocabulary = cub.cub_vocabulary(root)
    lines = []
    for split, caption_file in cub.CAPTION_FILES.items():
        paths, classes = cub.image_paths(directory / split)
        cub.read_captions(directory / caption_file, len(paths))
        cub.read_bird(paths[0])
        lines.append(f"cub {split}: {len(paths)} images of {len(np.unique(classes))} classes, "
                     f"{cub.CAPTIONS_PER_IMAGE * len(paths)} captions, vocabulary {len(vocabulary)} words")
    return lines


def _check_mhd(root: Path) -> list[str]:
    lines = []
    for split, name in mhd.MHD_FILES.items():
        content = mhd.read_mhd(root / mhd.MHD_DIR / name)
        shapes = ", ".join(f"{k} {tuple(v.shape[1:])}" for k, v in content.items() if k != "labels")
        lines.append(f"mhd {split}: {len(content['labels'])} samples; {shapes}")
    return lines


def _rat_files() -> tuple[PublishedFile, ...]:
    kinds = ("trial_info", "spike_data_binned")
    return tuple(PublishedFile(f"{rats.RATS_DIR}/{rat}/{rat}_{kind}.npy") for rat in rats.RATS for kind in kinds)


DATASETS = {
    "rats": PublishedDataset(
        "rats",
        rats.SOURCE,
        _rat_files(),
        _check_rats,
    ),
    "mnist_svhn": PublishedDataset(
        "mnist_svhn",
        mnist_svhn.SVHN_SOURCE,
        tuple(
            PublishedFile(f"{mnist_svhn.SVHN_DIR}/{name}", md5, mnist_svhn.SVHN_URL + name)
            for name, md5 in mnist_svhn.SVHN_MD5.items()
        ),
        _check_mnist_svhn,
    ),
    "celeba": PublishedDataset(
        "celeba",
        celeba.CELEBA_SOURCE,
        (
            PublishedFile(f"{celeba.CELEBA_DIR}/{celeba.IMAGE_DIR}", folder=True),
            *(PublishedFile(f"{celeba.CELEBA_DIR}/{name}", md5) for name, md5 in celeba.CELEBA_MD5.items()),
        ),
        _check_celeba,
    ),
    "cub": PublishedDataset(
        "cub",
        cub.CUB_SOURCE,
        (
            PublishedFile(f"{cub.CUB_DIR}/train", folder=True),
            PublishedFile(f"{cub.CUB_DIR}/test", folder=True),
            *(PublishedFile(f"{cub.CUB_DIR}/{name}") for name in cub.CAPTION_FILES.values()),
        ),
        _check_cub,
    ),
    "mhd": PublishedDataset(
        "mhd",
        mhd.MHD_SOURCE,
        tuple(PublishedFile(f"{mhd.MHD_DIR}/{name}") for name in mhd.MHD_FILES.values()),
        _check_mhd,
    ),
}


def _folder_size(path: Path) -> tuple[int, int]:
    count = size = 0
    for directory, _, names in os.walk(path):
        for name in names:
            count += 1
            size += (Path(directory) / name).stat().st_size
    return count, size


def file_status(root: Path, entry: PublishedFile) -> tuple[bool, int, str]:
    """(present, size in bytes, detail) of ``entry`` under ``root``; the detail is a folder's file count or a
    file's md5 status ("md5 ok", "MD5 MISMATCH (expected ...)", "no published md5")."""
    path = root / entry.path
    if not path.exists():
        return False, 0, ""
    if entry.folder:
        count, size = _folder_size(path)
        return True, size, f"{count} files"
    if entry.md5 is None:
        status = "no published md5"
    else:
        status = "md5 ok" if md5sum(path) == entry.md5 else f"MD5 MISMATCH (expected {entry.md5})"
    return True, path.stat().st_size, status


def prepare(name: str, root: Path, report: Report = print) -> None:
    """Check dataset ``name`` under ``root``: download the missing files that have an official URL and md5,
    verify the md5s that are published, then load it (raising a named error when it does not load)."""
    dataset = DATASETS[name]
    missing = []
    for entry in dataset.files:
        path = root / entry.path
        if path.exists():
            if entry.md5 is not None:
                verify_md5(path, entry.md5)
            report(f"  present    {path}" + (f"  md5 {entry.md5} ok" if entry.md5 else ""))
        elif entry.url is not None and entry.md5 is not None:
            report(f"  downloading {entry.url} ...")
            ensure_file(path, entry.md5, [entry.url])
            report(f"  downloaded {path}  md5 {entry.md5} ok")
        else:
            missing.append(entry.path)
    if missing:
        raise MissingDataError(f"{name}: missing under {root}: {', '.join(missing)}; {dataset.source}")
    for line in dataset.check(root):
        report(f"  loads      {line}")
