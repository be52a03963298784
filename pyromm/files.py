"""Atomic file writes: every file pyromm writes appears complete or not at all.

A write goes to a temporary file ``.<name>.<random>.tmp`` next to the target, is flushed and fsynced, takes
the mode the umask gives new files, and is renamed over the target (then the directory is fsynced). A crash or
a full disk leaves the previous file intact; ``remove_orphans`` deletes the temporary files a killed process
left behind. A full disk raises ``DiskFullError`` naming the target.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"
_UMASK_LOCK = threading.Lock()


class DiskFullError(OSError):
    """The disk (or quota) filled up while writing a file; the file keeps its previous contents."""


def current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Write to a temporary file in the target's directory, then flush, fsync, chmod to ``0o666 & ~umask`` and
    ``os.replace`` it; readers see either the old file or the complete new one.

    On any error the temporary file is removed; ENOSPC and EDQUOT raise ``DiskFullError`` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as err:
        raise _named(err, path) from err
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise _named(err, path) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Atomically replace ``path`` with ``value`` as indented JSON."""
    write_text(path, json.dumps(value, indent=2))


def remove_orphans(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of interrupted atomic writes (``.*.tmp``) in ``directory``; return them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.iterdir():
        if path.name.startswith(TEMP_PREFIX) and path.name.endswith(TEMP_SUFFIX) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows opening directories)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _named(err: OSError, path: Path) -> OSError:
    """``err`` with ``path`` as its file name (built-in OS errors without one); a full disk becomes
    ``DiskFullError``."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            err.errno, f"{os.strerror(err.errno)} while writing (the previous file, if any, is kept)", str(path)
        )
    if err.filename is None and err.errno is not None and type(err).__module__ == "builtins":
        return type(err)(err.errno, err.strerror or str(err), str(path))
    return err  # named already, or not an OS error of the write (e.g. a failed download inside the block)
