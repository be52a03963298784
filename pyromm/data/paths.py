"""Where pyromm keeps data files, md5 checks, and verified downloads of missing files."""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from pathlib import Path
from typing import Iterable

from pyromm.files import atomic_open

ENV_VAR = "PYROMM_DATA"
CACHE_ENV_VAR = "PYROMM_CACHE"
DEFAULT_ROOT = Path("~/.cache/pyromm")


class ChecksumError(ValueError):
    """Raised when a file's md5 differs from the expected one."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$PYROMM_DATA`` if set, else ``~/.cache/pyromm``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return DEFAULT_ROOT.expanduser()


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """Where pyromm writes what it derives (generated datasets, classifiers): ``root``, else
    ``$PYROMM_CACHE``, else ``~/.cache/pyromm``. Kept apart from the data root, which may be read-only."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else DEFAULT_ROOT.expanduser()


def md5sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """The hex md5 digest of the file at ``path``."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: str | os.PathLike, expected: str) -> None:
    """Raise :class:`ChecksumError` naming the file and both digests unless md5(path) == expected."""
    actual = md5sum(path)
    if actual != expected.lower():
        raise ChecksumError(f"md5 mismatch for {path}: expected {expected.lower()}, got {actual}")


def ensure_file(
    path: str | os.PathLike,
    md5: str,
    urls: Iterable[str],
    timeout: float = 60.0,
) -> Path:
    """Return ``path`` after checking its md5, downloading it first from ``urls`` (in order) if missing.

    A download goes to a temporary file next to ``path``, is md5-checked, and only then renamed onto
    ``path``; a failed or corrupt download is deleted. An existing file with the wrong md5 raises
    :class:`ChecksumError`; if every url fails, ``FileNotFoundError`` names the file and the urls.
    """
    path = Path(path)
    if path.exists():
        verify_md5(path, md5)
        return path
    urls = list(urls)
    failures = []
    for url in urls:
        try:
            _download(url, path, md5, timeout)
            return path
        except (OSError, ValueError, http.client.HTTPException) as err:
            failures.append(f"{url} ({type(err).__name__}: {err})")
    tried = "; ".join(failures) if failures else "no download source is known for this file"
    raise FileNotFoundError(
        f"data file {path} is missing and could not be downloaded (tried: {tried}). "
        f"Put the file there by hand, or point pyromm at a directory that holds it by setting "
        f"${ENV_VAR} or passing root=..."
    )


def _download(url: str, path: Path, md5: str, timeout: float) -> None:
    """Stream ``url`` into ``path`` atomically (``pyromm.files``), md5-checked before it replaces anything."""
    digest = hashlib.md5()
    with atomic_open(path, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != md5.lower():
            raise ChecksumError(f"md5 mismatch for {url}: expected {md5.lower()}, got {digest.hexdigest()}")
