"""Checks shared by the loaders of published datasets: missing files, md5s, truncated or malformed arrays.

A loader takes ``checksums``: ``None`` for the md5s the dataset's publisher lists (possibly none), or a
mapping ``file name -> md5`` to check instead (``{}`` checks nothing, e.g. for locally rebuilt files).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from pyromm.data.paths import verify_md5


class MissingDataError(FileNotFoundError):
    """A data file is not where the loader looks; the message names the file and where to get it."""


class DataFormatError(ValueError):
    """A file's content does not follow the dataset's documented format."""


class TruncatedArrayError(DataFormatError):
    """A file or array holds fewer bytes or entries than its header or its companion arrays require."""


def require_file(path: str | os.PathLike, source: str) -> Path:
    """``path`` if it exists, else :class:`MissingDataError` naming it and ``source`` (where to get it)."""
    path = Path(path)
    if not path.exists():
        raise MissingDataError(f"data file {path} is missing; {source}")
    return path


def check_file(
    path: str | os.PathLike, source: str, checksums: Mapping[str, str] | None, published: Mapping[str, str]
) -> Path:
    """``require_file(path, source)``, then its md5 against ``checksums`` (``published`` when None), keyed by
    the file's base name; a file the table does not name is not checked."""
    path = require_file(path, source)
    expected = (published if checksums is None else checksums).get(path.name)
    if expected is not None:
        verify_md5(path, expected)
    return path


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """The array in the ``.npy`` file at ``path``, after checking the file holds every byte its header
    announces (:class:`TruncatedArrayError` otherwise). Object arrays (pickles) are refused."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as err:
            raise DataFormatError(f"{path} is not a .npy file ({err})") from None
        if dtype.hasobject:
            raise DataFormatError(f"{path} holds Python objects, expected a numeric array")
        header = f.tell()
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = path.stat().st_size
    if found < expected:
        raise TruncatedArrayError(
            f"{path} is truncated: {found} bytes, its header announces a {dtype} array of shape {shape} "
            f"({expected} bytes)"
        )
    return np.load(path, allow_pickle=False)
