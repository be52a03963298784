"""A sweep of 4 runs on 2 workers, disturbed by SIGKILLs of workers and a full disk, ends equal to an undisturbed one.

The disturbed sweep runs in a 3 MB tmpfs, filled once while runs train (where mounting is not allowed, the
workers' fsync reports ENOSPC once instead). Attempts are repeated until one finishes; then every run's
evaluation, final checkpoint and metrics must equal those of an undisturbed sweep in this process, and no
file may be empty, truncated or left behind half-written.
"""
import errno
import json
import os
import random
import signal
import subprocess
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

import pytest
import torch

from pyromm.config import RunConfig
from pyromm.files import DiskFullError
from pyromm.lock import LOCK_FILE, locked_by
from pyromm.sweep import run_grid
from pyromm.train import CheckpointDir, load_checkpoint

BASE = dict(dataset="digits", num_views=2, latent_dim=2, hidden=[16], batch_size=16, epochs=2, train_limit=160,
            test_limit=64, classifier_epochs=1, classifier_train_limit=128, eval_num_train=128)
MAX_ATTEMPTS = 6
PNG_END = b"IEND\xaeB`\x82"


def configs(cache):
    return {f"{model}_beta{beta:g}": RunConfig(**BASE, model=model, beta=beta, cache_root=str(cache))
            for model in ("independent", "mmvm") for beta in (0.5, 2.0)}


def one_thread():
    """Pool initializer: one torch thread, as in the undisturbed sweep."""
    torch.set_num_threads(1)


def full_disk_once(marker):
    """Pool initializer: one torch thread; a random early fsync of a file being written atomically (a ``.tmp``)
    reports ENOSPC, once for all workers (the marker file is claimed with O_EXCL)."""
    torch.set_num_threads(1)
    real_fsync = os.fsync
    countdown = [random.randrange(1, 6)]

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            countdown[0] -= 1
            if countdown[0] == 0:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    return real_fsync(fd)
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    os.fsync = fsync


def training(out):
    """Whether a live process holds the lock of a run in ``out`` that has a checkpoint."""
    return any(locked_by(d) is not None and any((d / "checkpoints").glob("*.pt")) for d in out.iterdir() if d.is_dir())


class Disturber(threading.Thread):
    """Once runs train in ``out``: after a random pause, SIGKILL a random worker of ``pool`` (``kill``), or fill
    ``disk`` until the attempt is over (``fill``)."""

    def __init__(self, pool, out, action, disk):
        super().__init__(daemon=True)
        self.pool, self.out, self.action, self.disk, self.done = pool, out, action, disk, threading.Event()

    def run(self):
        while not self.done.is_set() and not (self.out.is_dir() and training(self.out)):
            time.sleep(0.02)
        if self.done.wait(random.uniform(0.0, 1.0)):
            return
        if self.action == "kill":
            pids = [p.pid for p in (self.pool._processes or {}).values() if p.is_alive()]
            if pids:
                os.kill(random.choice(pids), signal.SIGKILL)
        elif self.action == "fill" and self.disk is not None:
            filler = self.disk / "filler"
            with open(filler, "wb", buffering=0) as handle:
                for chunk in (1 << 16, 1 << 12, 1 << 9):
                    try:
                        while True:
                            handle.write(b"\0" * chunk)
                    except OSError as err:
                        assert err.errno == errno.ENOSPC
            self.done.wait()
            filler.unlink()


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True).returncode:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def check_intact(out):
    """No file under ``out`` is empty, truncated, half-written or a leftover lock."""
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        assert path.stat().st_size > 0, path
        assert not path.name.endswith((".tmp", ".corrupt")) and path.name != LOCK_FILE, path
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]
        elif path.suffix == ".pt" and path.parent.name == "checkpoints":
            load_checkpoint(path)
        elif path.suffix == ".pt":  # the latent sampler, the recorded probe features: whole tensor files
            torch.load(path, weights_only=True)
        elif path.suffix == ".png":
            assert path.read_bytes().endswith(PNG_END), path


def metrics(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_sweep_survives_killed_workers_and_a_full_disk(tmp_path, small_disk):
    cache = tmp_path / "cache"
    grid = configs(cache)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = run_grid(grid, tmp_path / "undisturbed", progress=False)
    finally:
        torch.set_num_threads(threads)

    out = (small_disk or tmp_path) / "sweep"
    marker = tmp_path / "enospc-injected"
    disturbances = ["kill", "fill"]
    failures = []
    for attempt in range(MAX_ATTEMPTS):
        action = disturbances[attempt] if attempt < len(disturbances) else None
        initializer = full_disk_once if (action == "fill" and small_disk is None) else one_thread
        initargs = (str(marker),) if initializer is full_disk_once else ()
        with ProcessPoolExecutor(2, mp_context=get_context("spawn"), initializer=initializer,
                                 initargs=initargs) as pool:
            disturber = Disturber(pool, out, action, small_disk)
            disturber.start()
            try:
                rows = run_grid(grid, out, executor=pool)
            except (BrokenProcessPool, DiskFullError) as err:
                failures.append(type(err).__name__)
                rows = None
            finally:
                disturber.done.set()
                disturber.join()
        if rows is None:
            continue
        if action is None:
            break
    else:
        pytest.fail(f"no undisturbed attempt finished: {failures}")
    assert "DiskFullError" in failures
    assert rows == expected
    for name in grid:
        ours, theirs = out / name, tmp_path / "undisturbed" / name
        assert json.loads((ours / "evaluation.json").read_text()) == json.loads((theirs / "evaluation.json").read_text())
        mine, reference = (load_checkpoint(CheckpointDir(d / "checkpoints").latest())["model"] for d in (ours, theirs))
        assert all(torch.equal(mine[k], reference[k]) for k in reference), name
        assert metrics(ours) == metrics(theirs)
    check_intact(out)
