"""One writer per run directory: ``<run_dir>/pyromm.lock``, holding the writer's pid and host.

The lock is an exclusive ``flock`` on that file, which the kernel releases when the process dies, however it
dies; the file's contents (pid, host, start time) name the holder in the error a second writer gets. A lock
file left by a dead process is stale: the next writer takes it over. A lock held by a process on another host
cannot be checked from here and is reported with the file to delete if that process is gone.

Locks are re-entrant within a process (training, then evaluating, the same run), not across a fork.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOCK_FILE = "pyromm.lock"
_HELD: dict[Path, tuple[int, int, int]] = {}  # lock path -> (pid, fd, depth)


class RunLockedError(RuntimeError):
    """Another process is writing the run directory."""


class RunLock:
    """Exclusive writer lock of ``run_dir`` (created if needed); use as a context manager."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = (self.run_dir / LOCK_FILE).absolute()

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise ``RunLockedError`` naming the holder at once (no waiting)."""
        held = _HELD.get(self.path)
        if held is not None and held[0] == os.getpid():
            _HELD[self.path] = (held[0], held[1], held[2] + 1)
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLockedError(f"run directory {self.run_dir} is in use by {_describe(read_holder(self.run_dir))}; "
                                     "wait for it to finish, or use another run directory") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the previous holder removed the file between our open and flock: try again
        previous = _read(fd)
        if previous and previous.get("host") != socket.gethostname() and previous.get("pid") is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise RunLockedError(
                f"run directory {self.run_dir} is locked by {_describe(previous)}, which cannot be checked from "
                f"{socket.gethostname()}; if that process has ended, delete {self.path}"
            )
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_me()).encode(), 0)
            os.fsync(fd)
        except OSError:
            pass  # a full disk: the flock still excludes other writers, who then cannot name this holder
        _HELD[self.path] = (os.getpid(), fd, 1)

    def release(self) -> None:
        """Drop one level of the lock; the last release deletes the lock file and unlocks it."""
        pid, fd, depth = _HELD[self.path]
        if depth > 1:
            _HELD[self.path] = (pid, fd, depth - 1)
            return
        del _HELD[self.path]
        self.path.unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def locked_by(run_dir: str | os.PathLike) -> str | None:
    """Who holds the lock of ``run_dir`` ("pid 12 on host h since ..."), or None when nobody does (a stale
    lock file of a dead process counts as nobody). Never takes the lock."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        held = _HELD.get(path.absolute())
        if held is not None and held[0] == os.getpid():
            return _describe(_me())
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe(_read(fd))
        fcntl.flock(fd, fcntl.LOCK_UN)
        previous = _read(fd)
        if previous and previous.get("host") != socket.gethostname() and previous.get("pid") is not None:
            return _describe(previous)
        return None
    finally:
        os.close(fd)


def read_holder(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The pid, host and start time written in ``run_dir``'s lock file (None when absent or unreadable)."""
    try:
        return json.loads((Path(run_dir) / LOCK_FILE).read_text()) or None
    except (OSError, ValueError):
        return None


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process (its lock file is being written, or could not be: is the disk full?)"
    return f"pid {holder.get('pid')} on host {holder.get('host')} (since {holder.get('since')})"


def _read(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, 1 << 16, 0)
        holder = json.loads(data) if data else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
