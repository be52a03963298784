"""MNIST from the four official idx files, parsed here (md5-checked, downloaded when missing)."""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from pyromm.data.paths import data_root, ensure_file

MNIST_URLS = (
    "http://yann.lecun.com/exdb/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


class IdxFormatError(ValueError):
    """Raised when a file is not a well-formed, complete idx file."""


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """The uint8 array stored in the idx file at ``path`` (gzip-compressed if it ends in ``.gz``).

    The header is a big-endian magic number ``0x0000 08 ndim`` (0x08 = unsigned byte) followed by
    ``ndim`` big-endian uint32 sizes. ``magic``, if given, must equal the file's magic number.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise IdxFormatError(f"{path} is truncated or not a valid gzip file: {err}") from err
    if len(raw) < 4:
        raise IdxFormatError(f"{path} is truncated: {len(raw)} bytes, too short for an idx header")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise IdxFormatError(f"{path} has idx magic number {found:#010x}, expected {magic:#010x}")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise IdxFormatError(f"{path} is not an unsigned-byte idx file (magic number {found:#010x})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFormatError(f"{path} is truncated inside its idx header ({len(raw)} of {header} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise IdxFormatError(f"{path} is {state}: {len(raw)} bytes, header {shape} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def mnist_file(root: str | os.PathLike | None, name: str) -> Path:
    """The md5-checked path of the MNIST file ``name`` under ``<root>/mnist/``, downloaded if missing."""
    return ensure_file(data_root(root) / "mnist" / name, MNIST_MD5[name], [url + name for url in MNIST_URLS])


def load_mnist(root: str | os.PathLike | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` ("train": 60,000, "test": 10,000) as uint8 images (N, 28, 28) and int64 labels (N,)."""
    if split not in MNIST_SPLITS:
        raise ValueError(f"split must be one of {sorted(MNIST_SPLITS)}, got {split!r}")
    image_name, label_name = MNIST_SPLITS[split]
    image_path, label_path = mnist_file(root, image_name), mnist_file(root, label_name)
    images = read_idx(image_path, IMAGES_MAGIC)
    labels = read_idx(label_path, LABELS_MAGIC).astype(np.int64)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise IdxFormatError(f"{image_path} holds shape {images.shape}, expected (N, 28, 28)")
    if labels.shape != (images.shape[0],):
        raise IdxFormatError(f"{label_path} holds {labels.shape} labels for {images.shape[0]} images")
    return images, labels
