"""Atomic writes: complete or absent, umask permissions, a full disk named, orphans removed."""
import errno
import os

import pytest
import torch
from torch import nn

from pyromm.files import DiskFullError, atomic_open, remove_orphans, write_text
from pyromm.train import CheckpointDir, load_checkpoint
from pyromm.train.checkpoint import capture_rng_state, model_signature


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    write_text(path, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(path, "w") as handle:
            handle.write("half of the new")
            raise RuntimeError("boom")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode


def test_a_full_disk_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = nn.Linear(2, 2)
    state = {"model": model.state_dict(), "optimizer": {}, "epoch": 1, "step": 3, "stage": 0,
             "rng": capture_rng_state(), "generator": torch.Generator().get_state(),
             "model_signature": model_signature(model), "config": "{}"}
    checkpoints = CheckpointDir(tmp_path)
    first = checkpoints.save(state)
    before = first.read_bytes()

    def no_space(fd):  # as fsync reports a full disk on NFS or with delayed allocation
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", no_space)
    with pytest.raises(DiskFullError) as err:
        checkpoints.save({**state, "epoch": 2, "step": 6})
    monkeypatch.undo()
    second = tmp_path / "epoch-00002.pt"
    assert err.value.filename == str(second) and err.value.errno == errno.ENOSPC
    assert str(err.value) == (f"[Errno 28] No space left on device while writing (the previous file, if any, is kept): "
                              f"'{second}'")
    assert not second.exists() and first.read_bytes() == before and load_checkpoint(first)["step"] == 3
    assert sorted(os.listdir(tmp_path)) == ["epoch-00001.pt"]


def test_remove_orphans_deletes_only_temporary_files(tmp_path):
    orphans = [tmp_path / ".epoch-00003.pt.k2j3.tmp", tmp_path / ".evaluation.json.x.tmp"]
    kept = [tmp_path / "epoch-00002.pt", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for path in orphans + kept:
        path.write_text("x")
    assert sorted(remove_orphans(tmp_path)) == sorted(orphans)
    assert sorted(tmp_path.iterdir()) == sorted(kept)
    assert remove_orphans(tmp_path / "missing") == []
