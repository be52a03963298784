"""One writer per run directory: a second writer fails at once naming the holder; stale locks are taken over."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from pyromm.config import RunConfig
from pyromm.lock import LOCK_FILE, RunLock, RunLockedError, locked_by
from pyromm.run import train
from pyromm.sweep import collect, run_job
from pyromm.train import CheckpointDir, load_checkpoint

SETTINGS = dict(dataset="digits", num_views=2, latent_dim=2, hidden=[8], batch_size=16, train_limit=128, test_limit=32,
                epochs=3, model="mmvm", beta=0.5)
HOLD = "import sys, time; from pyromm.lock import RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"


def holding(run_dir):
    """A process (no torch) that holds ``run_dir``'s lock until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def in_use(run_dir, pid):
    return (rf"^run directory {re.escape(str(run_dir))} is in use by pid {pid} on host {re.escape(socket.gethostname())} "
            r"\(since [^)]+\); wait for it to finish, or use another run directory$")


def test_second_pyromm_train_fails_at_once_and_the_first_equals_a_lone_run(tmp_path):
    run_dir = tmp_path / "shared"
    command = [sys.executable, "-m", "pyromm.cli", "train", "--out", str(run_dir), "--no-eval", "--no-progress",
               "--threads", "1"]
    command += [a for k, v in SETTINGS.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while str(first.pid) not in ((run_dir / LOCK_FILE).read_text() if (run_dir / LOCK_FILE).exists() else ""):
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGSTOP)  # the first holds the lock, paused, however long the second takes to start
    try:
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    # the lock file is deleted when the first exits: naming it, the second failed while the first was training
    assert second.returncode == 1 and second.stdout == ""
    assert re.match(in_use(run_dir, first.pid), second.stderr.removeprefix("pyromm: error: ").strip())
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert not (run_dir / LOCK_FILE).exists()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(RunConfig(**SETTINGS), tmp_path / "lone", progress=False)
    finally:
        torch.set_num_threads(threads)
    shared, lone = (load_checkpoint(CheckpointDir(d / "checkpoints").latest()) for d in (run_dir, tmp_path / "lone"))
    assert shared["epoch"] == lone["epoch"] == 3
    assert all(torch.equal(shared["model"][k], lone["model"][k]) for k in lone["model"])
    drop = lambda d: [{k: v for k, v in json.loads(line).items() if k != "seconds"}  # noqa: E731
                      for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert drop(run_dir) == drop(tmp_path / "lone")


def test_lock_held_by_a_live_process_is_refused_and_a_dead_ones_is_taken_over(tmp_path):
    proc = holding(tmp_path)
    try:
        with pytest.raises(RunLockedError) as err:
            RunLock(tmp_path).acquire()
        assert re.match(in_use(tmp_path, proc.pid), str(err.value))
        assert locked_by(tmp_path).startswith(f"pid {proc.pid} on host {socket.gethostname()}")
    finally:
        proc.kill()
        proc.wait()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == proc.pid  # the dead holder's file is left
    assert locked_by(tmp_path) is None  # ...and is stale
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        with RunLock(tmp_path):  # re-entrant within a process
            pass
        assert (tmp_path / LOCK_FILE).exists()
    assert not (tmp_path / LOCK_FILE).exists()


def test_lock_file_of_another_host_is_not_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 4242, "host": "node17", "since": "2026-01-01 10:00:00 UTC"}))
    with pytest.raises(RunLockedError) as err:
        RunLock(tmp_path).acquire()
    assert str(err.value) == (
        f"run directory {tmp_path} is locked by pid 4242 on host node17 (since 2026-01-01 10:00:00 UTC), which cannot "
        f"be checked from {socket.gethostname()}; if that process has ended, delete {tmp_path / LOCK_FILE}"
    )


def test_sweeps_and_collect_respect_the_lock(tmp_path):
    run_dir = tmp_path / "busy"
    proc = holding(run_dir)
    try:
        with pytest.raises(RunLockedError, match=in_use(run_dir, proc.pid)):
            run_job("busy", RunConfig(**SETTINGS), run_dir)
        with pytest.raises(FileNotFoundError) as err:
            collect(tmp_path)
        assert str(err.value).startswith(f"no run directory with an evaluation.json to use in {tmp_path}; busy: in use "
                                         f"by pid {proc.pid} on host {socket.gethostname()}")
    finally:
        proc.kill()
        proc.wait()
