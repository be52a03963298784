"""A run directory holds one experiment: foreign checkpoints, configs and unverifiable files are refused."""
import json
import os
import shutil

import pytest
import torch

from pyromm.cli import main
from pyromm.config import RunConfig
from method_options import for_method
from pyromm.identity import IDENTITY_FILE, RunIdentity, RunIdentityError, config_hash
from pyromm.run import train
from pyromm.train import CheckpointError, CheckpointMismatchError, Trainer, load_checkpoint, model_signature
from pyromm.train.checkpoint import CHECKSUM_KEY

TINY = dict(dataset="digits", num_views=2, latent_dim=2, hidden=[8], batch_size=32, train_limit=64, test_limit=32,
            classifier_epochs=1, classifier_train_limit=64, eval_num_train=64, epochs=1)
ADVICE = "use another run directory, or start afresh with resume='never' (pyromm train --no-resume)"


def cfg(**changes) -> RunConfig:
    """TINY, MMVM by default, α a constant 0 where the method has one."""
    settings = {**TINY, "model": "mmvm", **changes}
    return RunConfig(**settings, **for_method(settings["model"], alpha=0.0))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """a: mmvm, 1 epoch; other_model: independent, 2 epochs; other_seed_beta: mmvm seed 99 β 4, 2 epochs."""
    root = tmp_path_factory.mktemp("identity")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg(), root / "a", progress=False)
        train(cfg(model="independent", epochs=2), root / "other_model", progress=False)
        train(cfg(epochs=2, seed=99, beta=4.0), root / "other_seed_beta", progress=False)
    finally:
        torch.set_num_threads(threads)
    return root


def copy_run(runs, tmp_path):
    shutil.copytree(runs / "a", tmp_path / "a")
    return tmp_path / "a"


def test_run_directory_and_checkpoints_carry_the_identity(runs):
    saved = json.loads((runs / "a" / "config.json").read_text())
    stamp = json.loads((runs / "a" / IDENTITY_FILE).read_text())
    state = load_checkpoint(runs / "a" / "checkpoints" / "epoch-00001.pt")
    assert stamp["config_hash"] == config_hash(saved) == state["identity"]["config_hash"]
    assert stamp["architecture_hash"] == RunIdentity(saved, state["model_signature"]).architecture_hash
    assert stamp["architecture_hash"] == state["identity"]["architecture_hash"]
    assert stamp["pyromm_version"] == state["identity"]["pyromm_version"]
    # resumable settings leave the hash alone; anything else changes it
    longer = {**saved, "run": {**saved["run"], "epochs": 9, "device": "cuda"}}
    assert config_hash(longer) == config_hash(saved)
    assert config_hash({**saved, "run": {**saved["run"], "beta": 2.0}}) != config_hash(saved)


@pytest.mark.parametrize(
    "source, differences",
    [
        ("other_model", 'model.conditional_prior: "standard_normal" in the checkpoint, "MMVMPrior(alpha=0.0)" now; '
                        'run.alpha: absent in the checkpoint, 0.0 now; '
                        'run.alpha_anneal_epochs: absent in the checkpoint, null now; '
                        'run.alpha_schedule: absent in the checkpoint, null now; '
                        'run.model: "independent" in the checkpoint, "mmvm" now; '
                        'run.rate: "analytic" in the checkpoint, "jensen" now; '
                        'trainer.schedules.alpha.kind: absent in the checkpoint, "constant" now; '
                        'trainer.schedules.alpha.value: absent in the checkpoint, 0.0 now'),
        ("other_seed_beta", "run.beta: 4.0 in the checkpoint, 1.0 now; run.seed: 99 in the checkpoint, 0 now; "
                            "trainer.schedules.beta.value: 4.0 in the checkpoint, 1.0 now; "
                            "trainer.seed: 99 in the checkpoint, 0 now"),
    ],
)
def test_foreign_checkpoint_is_refused(runs, tmp_path, source, differences):
    run = copy_run(runs, tmp_path)
    foreign = run / "checkpoints" / "epoch-00002.pt"
    shutil.copy(runs / source / "checkpoints" / "epoch-00002.pt", foreign)
    expected = (f"checkpoint {foreign} belongs to another experiment: {differences}; move it out of "
                f"{run / 'checkpoints'}, or {ADVICE}")
    with pytest.raises(RunIdentityError) as err:
        train(cfg(epochs=2), run, progress=False)
    assert str(err.value) == expected


def test_later_checkpoint_renamed_to_an_earlier_epoch_is_refused(runs, tmp_path):
    run = copy_run(runs, tmp_path)
    (run / "checkpoints" / "epoch-00001.pt").unlink()
    renamed = run / "checkpoints" / "epoch-00001.pt"
    shutil.copy(runs / "other_seed_beta" / "checkpoints" / "epoch-00002.pt", renamed)
    step = load_checkpoint(renamed)["step"]
    with pytest.raises(CheckpointMismatchError) as err:
        train(cfg(epochs=2), run, progress=False)
    assert str(err.value) == (f"checkpoint {renamed} holds epoch 2 (step {step}) but its name says epoch 1: it was "
                              "renamed or copied from another run; delete it to resume from the others")


def test_python_trainer_on_another_experiments_directory_is_refused(runs, tmp_path):
    run = copy_run(runs, tmp_path)
    before = (run / "config.json").read_text()
    with pytest.raises(RunIdentityError) as err:
        train(cfg(model="independent"), run, progress=False)
    assert str(err.value) == (
        f"run directory {run} holds another experiment: "
        'model.conditional_prior: "MMVMPrior(alpha=0.0)" in the run, "standard_normal" now; '
        'run.alpha: 0.0 in the run, absent now; run.alpha_anneal_epochs: null in the run, absent now; '
        'run.alpha_schedule: null in the run, absent now; run.model: "mmvm" in the run, "independent" now; '
        'run.rate: "jensen" in the run, "analytic" now; '
        'trainer.schedules.alpha.kind: "constant" in the run, absent now; '
        f"trainer.schedules.alpha.value: 0.0 in the run, absent now; {ADVICE}"
    )
    assert (run / "config.json").read_text() == before
    # starting afresh is explicit
    train(cfg(model="independent"), run, progress=False, resume="never")
    assert json.loads((run / "config.json").read_text())["run"]["model"] == "independent"


@pytest.mark.parametrize("damage, problem", [("delete", "is missing"),
                                             ("corrupt", "cannot be read (JSONDecodeError: Expecting value: line 1 "
                                                         "column 1 (char 0))")])
def test_checkpoints_without_a_readable_config_are_an_error(runs, tmp_path, capsys, damage, problem):
    run = copy_run(runs, tmp_path)
    config = run / "config.json"
    config.unlink() if damage == "delete" else config.write_text("")
    expected = (f"{config} {problem}, but the directory holds checkpoints, so pyromm cannot tell which experiment "
                "they belong to: restore the file, or start afresh with resume='never' (pyromm train --no-resume), "
                "which deletes the checkpoints")
    with pytest.raises(RunIdentityError) as err:
        train(cfg(beta=2.0, seed=3), run, progress=False)
    assert str(err.value) == expected
    settings = [f"{k}={json.dumps(v)}" for k, v in {**TINY, "beta": 2.0, "seed": 3}.items()]
    args = ["train", "--out", str(run), "--no-eval", "--no-progress"] + [a for s in settings for a in ("--set", s)]
    assert main(args) == 2
    assert capsys.readouterr().err == f"pyromm: error: {expected}\n"


def test_checkpoint_with_its_checksum_key_renamed_is_refused(runs, tmp_path):
    run = copy_run(runs, tmp_path)
    path = run / "checkpoints" / "epoch-00001.pt"
    state = torch.load(path, weights_only=True)
    state["checksum_old"] = state.pop(CHECKSUM_KEY)
    first = next(iter(state["model"]))
    state["model"][first].view(-1)[0] = -3.7e36  # the tampered weight the checksum would have caught
    torch.save(state, path)
    unchecked = (f"checkpoint {path} has no 'checksum' key, so its contents cannot be verified; if you trust the "
                 "file, load it with load_checkpoint(path, allow_unchecked=True)")
    with pytest.raises(CheckpointError) as err:
        train(cfg(epochs=2), run, progress=False)
    assert str(err.value) == f"no readable checkpoint in {run / 'checkpoints'}: {unchecked}"
    assert load_checkpoint(path, allow_unchecked=True)["model"][first].view(-1)[0] == -3.7e36


def test_resume_modes_and_the_resume_message(runs, tmp_path, capsys):
    run = copy_run(runs, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^resume='must', but .*empty/checkpoints holds no checkpoint"):
        train(cfg(), tmp_path / "empty", progress=False, resume="must")
    capsys.readouterr()
    _, history, _, _ = train(cfg(epochs=2), run, progress=False, resume="must")
    step = history[0]["step"]
    assert capsys.readouterr().out == f"resumed {run} from epoch 1, step {step}\n"
    assert [row["epoch"] for row in history] == [1, 2]
    with pytest.raises(ValueError, match=r"resume must be one of \('auto', 'never', 'must'\) \(or True/False\), got 'yes'"):
        Trainer(torch.nn.Linear(1, 1), lambda *a: None, resume="yes")


def test_orphan_temporary_files_are_removed_and_files_follow_the_umask(runs, tmp_path):
    run = copy_run(runs, tmp_path)
    orphans = [run / "checkpoints" / ".epoch-00002.pt.x1y2.tmp", run / ".metrics.jsonl.abc.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half")
    previous = os.umask(0o002)
    try:
        train(cfg(epochs=2), run, progress=False)
    finally:
        os.umask(previous)
    assert not any(orphan.exists() for orphan in orphans)
    for name in ("config.json", IDENTITY_FILE, "metrics.jsonl", "metrics.csv", "checkpoints/epoch-00002.pt"):
        assert (run / name).stat().st_mode & 0o777 == 0o664, name


def test_model_signature_is_the_architecture(runs):
    state = load_checkpoint(runs / "a" / "checkpoints" / "epoch-00001.pt")
    other = load_checkpoint(runs / "other_model" / "checkpoints" / "epoch-00002.pt")
    assert state["model_signature"] == other["model_signature"]  # same networks: only the config tells them apart
    assert state["identity"]["architecture_hash"] == other["identity"]["architecture_hash"]
    assert model_signature(torch.nn.Linear(2, 3))["parameters"] == [["bias", [3]], ["weight", [3, 2]]]
