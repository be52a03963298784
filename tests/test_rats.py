"""The rats loader on fabricated per-rat files in the published format: windows, pairing, split, named errors."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from pyromm.data.files import MissingDataError, TruncatedArrayError
from pyromm.data.paths import ChecksumError, md5sum
from pyromm.data.rats import NEURONS, RATS, ColumnCountError, load_rats, rat_files
from pyromm.nn.spike import spike_decoder, spike_encoder

# Odour ids (column 3 of the trial info, 1-based) of each rat's trials, in file order.
ODOURS = {
    "barat": [1, 2, 1, 3, 5, 4, 1],
    "buchanan": [2, 1, 1, 4, 3],
    "mitt": [1, 1, 1, 2, 3, 4, 2],
    "stella": [3, 1, 2, 4, 1],
    "superchris": [1, 4, 2, 1, 3, 5],
}
# Worked out by hand: n = (2, 1, 1, 1) paired trials for odours 0..3; each row is (odour, trial of barat,
# buchanan, mitt, stella, superchris): the j-th trial with that odour of every rat.
EXPECTED_PAIRS = [
    (0, [0, 1, 0, 1, 0]),
    (0, [2, 2, 1, 4, 3]),
    (1, [1, 0, 3, 2, 2]),
    (2, [3, 4, 4, 0, 4]),
    (3, [5, 3, 5, 3, 1]),
]
BINS = 280


def spike_value(trial: int, neuron: int, time_bin: int) -> int:
    return 100000 * trial + 1000 * neuron + time_bin


def write_rat(root: Path, rat: str, odours: list[int], neurons: int | None = None, fields: int = 5) -> None:
    info_path, spike_path = rat_files(root, rat)
    info_path.parent.mkdir(parents=True, exist_ok=True)
    info = np.zeros((len(odours), fields), dtype=np.int64)
    info[:, min(3, fields - 1)] = odours
    np.save(info_path, info)
    t, n, b = np.meshgrid(np.arange(len(odours)), np.arange(neurons or NEURONS[rat]), np.arange(BINS), indexing="ij")
    np.save(spike_path, spike_value(t, n, b).astype(np.int32))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for rat, odours in ODOURS.items():
        write_rat(tmp_path, rat, odours)
    return tmp_path


def test_windows_and_pairing_match_the_hand_computed_table(root: Path) -> None:
    data = load_rats(root, "all")
    assert data.modalities == list(RATS)
    assert len(data) == 16 * len(EXPECTED_PAIRS)
    assert data.labels.tolist() == [odour for odour, _ in EXPECTED_PAIRS for _ in range(16)]
    assert data.metadata["trials_per_odour"] == [2, 1, 1, 1]
    assert data.metadata["paired_trials"] == [trials for _, trials in EXPECTED_PAIRS]
    for r, rat in enumerate(RATS):
        x = data.data[rat]
        assert x.dtype == torch.float32 and x.shape == (80, NEURONS[rat] * 10)
        start = {"mitt": 250, "stella": 250}.get(rat, 225)
        for k, (_, trials) in enumerate(EXPECTED_PAIRS):
            for t in (0, 7, 15):
                window = x[16 * k + t].reshape(NEURONS[rat], 10)
                expected = [[spike_value(trials[r], n, start + t + u) for u in range(10)] for n in range(NEURONS[rat])]
                assert window.tolist() == expected
    # one entry by hand: mitt, paired trial k = 1 (its trial 1), offset t = 5, neuron 3, bin 7 of the sub-window
    assert data.data["mitt"][16 * 1 + 5, 3 * 10 + 7].item() == 100000 * 1 + 1000 * 3 + (250 + 5 + 7)


def test_seeded_split_keeps_trials_whole(root: Path) -> None:
    train, test = (load_rats(root, s, test_fraction=0.5, seed=3) for s in ("train", "test"))
    assert len(train) + len(test) == 80 and len(test) % 16 == 0
    pairs = [tuple(p) for p in train.metadata["paired_trials"] + test.metadata["paired_trials"]]
    assert sorted(pairs) == sorted(tuple(t) for _, t in EXPECTED_PAIRS)
    # odour 0 has 2 paired trials: one goes to test (int(0.5 * 2 + 0.5) = 1); odours 1..3 have 1: int(1.0) = 1
    assert sorted(set(test.labels.tolist())) == [0, 1, 2, 3] and test.labels.tolist().count(0) == 16
    again = load_rats(root, "test", test_fraction=0.5, seed=3)
    assert torch.equal(again.data["barat"], test.data["barat"])
    assert len(load_rats(root, "train", test_fraction=0.0)) == 80


def test_subset_of_rats_pairs_over_those_rats(root: Path) -> None:
    data = load_rats(root, "all", rats=["barat", "mitt"])
    # barat/mitt odour counts: 0: (3, 3), 1: (1, 2), 2: (1, 1), 3: (1, 1)
    assert data.modalities == ["barat", "mitt"] and len(data) == 16 * 6


def test_missing_file_names_it(root: Path) -> None:
    rat_files(root, "stella")[1].unlink()
    with pytest.raises(MissingDataError, match="stella_spike_data_binned.npy") as info:
        load_rats(root)
    assert "10.7280/D14X30" in str(info.value)


def test_wrong_md5(root: Path) -> None:
    info_path = rat_files(root, "barat")[0]
    with pytest.raises(ChecksumError, match=str(info_path)):
        load_rats(root, checksums={info_path.name: "0" * 32})
    assert len(load_rats(root, "all", checksums={info_path.name: md5sum(info_path)})) == 80


def test_truncated_array(root: Path) -> None:
    spike_path = rat_files(root, "buchanan")[1]
    spike_path.write_bytes(spike_path.read_bytes()[:-100])
    with pytest.raises(TruncatedArrayError, match="buchanan_spike_data_binned.npy is truncated"):
        load_rats(root)


def test_too_few_time_bins(root: Path) -> None:
    spike_path = rat_files(root, "mitt")[1]
    np.save(spike_path, np.zeros((7, NEURONS["mitt"], 270), dtype=np.int32))
    with pytest.raises(TruncatedArrayError, match="270 time bins, the window needs 275"):
        load_rats(root)


def test_wrong_number_of_columns_names_file_expected_and_found(root: Path) -> None:
    write_rat(root, "superchris", ODOURS["superchris"], neurons=40)
    with pytest.raises(ColumnCountError) as info:
        load_rats(root)
    message = str(info.value)
    assert "superchris_spike_data_binned.npy" in message and "expected 46" in message and "found 40" in message
    write_rat(root, "superchris", ODOURS["superchris"], fields=3)
    with pytest.raises(ColumnCountError) as info:
        load_rats(root)
    message = str(info.value)
    assert "superchris_trial_info.npy" in message and "at least 4 columns" in message and "(6, 3)" in message


def test_spike_networks_follow_the_reference_layout() -> None:
    encoder, decoder = spike_encoder(460, 2), spike_decoder(2, 460)
    linear = [m for m in encoder.body if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(460, 460), (460, 460), (460, 2)]
    assert all(isinstance(m, torch.nn.LeakyReLU) for m in encoder.body[1::2])
    loc, log_var = encoder(torch.zeros(3, 460))
    assert loc.shape == log_var.shape == (3, 2) and decoder(loc).shape == (3, 460)
    assert isinstance(decoder.out, torch.nn.Linear) and decoder.out.in_features == 460


def test_experiment_skips_with_a_message_without_data(tmp_path: Path, capsys) -> None:
    script = Path(__file__).parents[1] / "experiments" / "rats.py"
    spec = importlib.util.spec_from_file_location("rats_experiment", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--quick", "--data-root", str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "skipping the rats experiment" in err and "barat_trial_info.npy" in err and "10.7280/D14X30" in err
    assert not (tmp_path / "out").exists()
