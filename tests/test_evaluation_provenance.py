"""Evaluations record the checkpoint they scored; stale, unreadable and half-written ones never pass as results."""
import errno
import json
import os
import shutil
import subprocess

import pytest
import torch

from pyromm import run as run_module
from pyromm.cli import main
from pyromm.config import RunConfig
from pyromm.files import DiskFullError
from pyromm.identity import read_stamp
from pyromm.run import load_run_with_source, load_data, evaluate_run, run, train
from pyromm.sweep import collect, finished_results
from pyromm.train import load_checkpoint

TINY = dict(dataset="digits", num_views=2, latent_dim=2, hidden=[8], batch_size=32, train_limit=64, test_limit=32,
            classifier_epochs=1, classifier_train_limit=64, eval_num_train=64, epochs=1, model="mmvm")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """An evaluated one-epoch run ``a`` (classifiers cached under ``cache``)."""
    root = tmp_path_factory.mktemp("provenance")
    cfg = RunConfig(**TINY, cache_root=str(root / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(cfg, root / "runs" / "a", progress=False)
    finally:
        torch.set_num_threads(threads)
    return cfg, root / "runs" / "a"


def copy_of(evaluated, tmp_path, name="a"):
    shutil.copytree(evaluated[1], tmp_path / name)
    return tmp_path / name


def test_evaluation_records_the_checkpoint_epoch_step_and_identity(evaluated):
    cfg, run_dir = evaluated
    results = json.loads((run_dir / "evaluation.json").read_text())
    state = load_checkpoint(run_dir / "checkpoints" / "epoch-00001.pt")
    stamp = read_stamp(run_dir)
    assert results["source"] == {"checkpoint": "checkpoints/epoch-00001.pt", "epoch": 1, "batch": 0,
                                 "step": state["step"], "identity": stamp}
    assert stamp == state["identity"]
    assert finished_results(cfg, run_dir) == results


def test_collect_flags_a_stale_evaluation_and_the_sweep_evaluates_again(evaluated, tmp_path, capsys):
    cfg, _ = evaluated
    copy_of(evaluated, tmp_path, "a")
    extended = copy_of(evaluated, tmp_path, "b")
    _, history, _, _ = train(cfg.replace(epochs=2), extended, progress=False)  # --no-eval: evaluation.json stays
    evaluation = extended / "evaluation.json"
    reason = (f"{evaluation} is stale: it scored checkpoints/epoch-00001.pt (epoch 1, step {history[0]['step']}), "
              f"but the run's newest checkpoint is checkpoints/epoch-00002.pt; evaluate the run again "
              f"(pyromm evaluate {extended})")
    rows, skipped = collect(tmp_path)
    assert [row["run"] for row in rows] == ["a"] and skipped == [("b", reason)]
    capsys.readouterr()
    assert main(["collect", str(tmp_path)]) == 0
    assert f"skipped b: {reason}\n1 runs (1 directories skipped); wrote" in capsys.readouterr().out
    # as if a two-epoch run had been evaluated after its first epoch: same config, older checkpoint
    results = json.loads(evaluation.read_text())
    evaluation.write_text(json.dumps({**results, "config": cfg.replace(epochs=2).to_dict()}))
    with pytest.warns(UserWarning, match="evaluation.json is stale: it scored checkpoints/epoch-00001.pt"):
        assert finished_results(cfg.replace(epochs=2), extended) is None


def test_unreadable_and_unrecorded_evaluations_are_named(evaluated, tmp_path):
    cfg, _ = evaluated
    empty = copy_of(evaluated, tmp_path, "empty") / "evaluation.json"
    empty.write_text("")
    older = copy_of(evaluated, tmp_path, "older") / "evaluation.json"
    results = json.loads(older.read_text())
    del results["source"]
    older.write_text(json.dumps(results))
    (tmp_path / "logs").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        collect(tmp_path)
    assert str(err.value) == (
        f"no run directory with an evaluation.json to use in {tmp_path}; "
        f"empty: {empty} is unreadable (JSONDecodeError: Expecting value: line 1 column 1 (char 0)); evaluate the run "
        f"again; logs: not a run directory (no config.json); "
        f"older: {older} is stale: it does not record which checkpoint it scored (written by an older pyromm); "
        f"evaluate the run again (pyromm evaluate {older.parent})"
    )
    with pytest.warns(UserWarning, match=rf"{empty} cannot be read \(JSONDecodeError: Expecting value"):
        assert finished_results(cfg, empty.parent) is None


def test_evaluation_after_a_fallback_records_the_older_checkpoint(evaluated, tmp_path, capsys):
    cfg, _ = evaluated
    run_dir = copy_of(evaluated, tmp_path)
    train(cfg.replace(epochs=2), run_dir, progress=False)
    newest = run_dir / "checkpoints" / "epoch-00002.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    capsys.readouterr()
    assert main(["evaluate", str(run_dir)]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if line.startswith("pyromm: warning: ")]
    assert len(warning) == 1 and warning[0].endswith("falling back to epoch-00001.pt (the bad file is kept as "
                                                     "epoch-00002.pt.corrupt)")
    assert "scored checkpoints/epoch-00001.pt (epoch 1, step" in captured.out
    assert json.loads((run_dir / "evaluation.json").read_text())["source"]["checkpoint"] == "checkpoints/epoch-00001.pt"
    rows, skipped = collect(tmp_path)
    assert [r["run"] for r in rows] == ["a"] and skipped == []


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs at ``tmp_path/disk`` (None where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(directory):
    """Write ``directory/filler`` until the disk is full."""
    with open(directory / "filler", "wb", buffering=0) as handle:
        for chunk in (1 << 16, 1 << 12, 1 << 9):
            try:
                while True:
                    handle.write(b"\0" * chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC


def test_full_disk_during_evaluation_keeps_the_previous_evaluation_and_names_the_path(
    evaluated, small_disk, tmp_path, monkeypatch, capsys
):
    """On a real 3 MB tmpfs filled once the metrics and plots are done, as evaluation.json is written; where
    mounting is not allowed, the disk reports ENOSPC on fsync instead (as NFS and delayed allocation do)."""
    run_dir = copy_of(evaluated, small_disk or tmp_path)
    previous = (run_dir / "evaluation.json").read_bytes()
    real_write_json, real_fsync = run_module.write_json, os.fsync

    def write_json_on_a_full_disk(path, value):
        if small_disk is not None:
            fill(small_disk)
        else:
            def no_space(fd):
                raise OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr("pyromm.files.os.fsync", no_space)
        real_write_json(path, value)

    monkeypatch.setattr(run_module, "write_json", write_json_on_a_full_disk)
    path = run_dir / "evaluation.json"
    assert main(["evaluate", str(run_dir)]) == 1
    assert capsys.readouterr().err == (
        f"pyromm: error: disk full: cannot write {path} (No space left on device while writing (the previous file, "
        f"if any, is kept)); free some space and run again\n"
    )
    assert path.read_bytes() == previous
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    if small_disk is not None:  # space again, until the next evaluation.json
        (small_disk / "filler").unlink()
    else:
        monkeypatch.setattr("pyromm.files.os.fsync", real_fsync)
    cfg, model, source = load_run_with_source(run_dir)
    train_set, test_set = load_data(cfg)
    with pytest.raises(DiskFullError) as err:
        evaluate_run(model, train_set, test_set, cfg, run_dir, source)
    assert err.value.filename == str(path) and err.value.errno == errno.ENOSPC
    assert path.read_bytes() == previous
