import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

from pyromm.train import CheckpointDir, CheckpointError, CheckpointMismatchError, load_checkpoint, save_checkpoint
from pyromm.train.checkpoint import capture_rng_state, load_model_state, model_signature, restore_rng_state


class Net(nn.Module):
    def __init__(self, hidden: int = 3) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, hidden)
        self.decoder = nn.Linear(hidden, 4)


class OtherNet(Net):
    pass


class Payload:
    """Unpickling it would create ``target``."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def make_state(model: nn.Module, epoch: int = 1) -> dict:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    sum(p.square().sum() for p in model.parameters()).backward()
    optimizer.step()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": 10 * epoch,
        "stage": 0,
        "rng": capture_rng_state(),
        "generator": torch.Generator().manual_seed(3).get_state(),
        "model_signature": model_signature(model),
        "config": '{"lr": 0.01}',
    }


def test_round_trip_and_atomic_write(tmp_path):
    model = Net()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, make_state(model, epoch=3))
    state = load_checkpoint(path)
    assert state["epoch"] == 3 and state["step"] == 30 and state["config"] == '{"lr": 0.01}'
    fresh = Net(hidden=3)
    load_model_state(fresh, state, path)
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]

    bad = dict(make_state(model, epoch=4), config=lambda: None)
    with pytest.raises(Exception):
        save_checkpoint(path, bad)
    assert load_checkpoint(path)["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_rng_states_round_trip(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    np.random.normal()
    random.gauss(0, 1)
    path = tmp_path / "rng.pt"
    save_checkpoint(path, make_state(Net()))
    expected = (torch.rand(3), np.random.normal(size=3), random.gauss(0, 1), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(load_checkpoint(path)["rng"])
    got = (torch.rand(3), np.random.normal(size=3), random.gauss(0, 1), random.random())
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1])
    assert expected[2:] == got[2:]


def test_other_model_raises_mismatch(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, make_state(Net(hidden=3)))
    state = load_checkpoint(path)
    with pytest.raises(CheckpointMismatchError, match=r"decoder\.weight.*\(4, 3\).*\(4, 5\)"):
        load_model_state(Net(hidden=5), state, path)
    with pytest.raises(CheckpointMismatchError, match="Net"):
        load_model_state(OtherNet(hidden=3), state, path)

    class Renamed(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(4, 3)

    renamed = Renamed()
    renamed.__class__.__qualname__ = "Net"
    with pytest.raises(CheckpointMismatchError, match="decoder.bias"):
        load_model_state(renamed, state, path)


def test_truncated_and_foreign_files_raise_checkpoint_error(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, make_state(Net()))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        load_checkpoint(path)
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["pickle", "torch"])
def test_malicious_pickle_is_not_executed(tmp_path, writer):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    state = dict(make_state(Net()), config=Payload(target))
    if writer == "pickle":
        path.write_bytes(pickle.dumps(state))
    else:
        torch.save(state, path)
    assert not target.exists()
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    assert not target.exists()


def test_checkpoint_dir_keeps_last(tmp_path):
    checkpoints = CheckpointDir(tmp_path / "ckpts", keep_last=2)
    assert checkpoints.latest() is None
    model = Net()
    for epoch in range(1, 6):
        checkpoints.save(make_state(model, epoch=epoch))
    assert [p.name for p in checkpoints.paths()] == ["epoch-00004.pt", "epoch-00005.pt"]
    assert load_checkpoint(checkpoints.latest())["epoch"] == 5
    checkpoints.clear()
    assert checkpoints.paths() == []
    with pytest.raises(ValueError):
        CheckpointDir(tmp_path, keep_last=0)


def test_flipped_byte_in_tensor_data_is_detected_by_the_checksum(tmp_path):
    model = Net()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, make_state(model))
    data = bytearray(path.read_bytes())
    offset = data.find(model.decoder.weight.detach().numpy().tobytes())
    assert offset > 0
    data[offset + 5] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"checkpoint .*ckpt\.pt is corrupt: its contents do not match its SHA"):
        load_checkpoint(path)
    torch.save(make_state(model), path)
    with pytest.raises(CheckpointError, match=r"ckpt\.pt has no 'checksum' key, so its contents cannot be verified"):
        load_checkpoint(path)
    assert "checksum" not in load_checkpoint(path, allow_unchecked=True)


def test_mid_epoch_checkpoints_sort_between_epochs_and_rotate(tmp_path):
    checkpoints = CheckpointDir(tmp_path, keep_last=3)
    model = Net()
    for epoch, batch in [(1, 0), (1, 7), (2, 0), (2, 3), (2, 12)]:
        checkpoints.save({**make_state(model, epoch=epoch), "batch": batch})
    assert [p.name for p in checkpoints.paths()] == [
        "epoch-00002.pt",
        "epoch-00002-batch-000003.pt",
        "epoch-00002-batch-000012.pt",
    ]
    assert load_checkpoint(checkpoints.latest())["batch"] == 12


def test_load_latest_falls_back_past_unreadable_files(tmp_path):
    checkpoints = CheckpointDir(tmp_path, keep_last=None)
    assert checkpoints.load_latest() is None
    model = Net()
    for epoch in (1, 2, 3):
        checkpoints.save(make_state(model, epoch=epoch))
    checkpoints.path_for(3).write_bytes(checkpoints.path_for(3).read_bytes()[:100])
    checkpoints.path_for(2).write_bytes(b"")
    with pytest.warns(UserWarning) as caught:
        path, state = checkpoints.load_latest()
    assert path.name == "epoch-00001.pt" and state["epoch"] == 1
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert "epoch-00003.pt" in messages[0] and "falling back to epoch-00001.pt" in messages[0]
    assert "kept as epoch-00002.pt.corrupt" in messages[1]
    assert [p.name for p in checkpoints.paths()] == ["epoch-00001.pt"]
    assert sorted(p.name for p in tmp_path.glob("*.corrupt")) == ["epoch-00002.pt.corrupt", "epoch-00003.pt.corrupt"]
    checkpoints.path_for(1).write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint in .*epoch-00001\.pt"):
        checkpoints.load_latest()
    assert checkpoints.path_for(1).exists()
