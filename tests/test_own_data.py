"""Your own data: TOML configs, dataset 'files' (.npz, a folder of .npy/.pt), per-modality options, and bad input."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import pyromm

from pyromm.cli import build_config, main
from pyromm.config import ConfigError, RunConfig
from pyromm.config_file import read_config_file
from pyromm.data.own import DtypeWarning, OwnDataError, load_files, read_arrays
from pyromm.likelihoods import Bernoulli, Normal
from pyromm.modality_options import ModalityOptions, networks
from pyromm.methods.common import build_modalities
from pyromm.saved_runs import load as pyromm_load

N = 40


def own_arrays(n: int = N) -> dict[str, np.ndarray]:
    """A (1, 6, 6) image in [0, 1] (float64), a (5,) vector (float64) and 4-class labels, all of n samples."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, n)
    image = np.zeros((n, 1, 6, 6))
    image[np.arange(n), 0, labels, :] = 1.0
    vector = rng.normal(size=(n, 5)) + 3 * np.eye(4, 5)[labels]
    return {"image": image, "vector": vector, "labels": labels}


TOML = """
model = "mmvm"
epochs = 1
batch_size = 16
latent_dim = 3
hidden = [16]
classifier_epochs = 1
eval_num_train = 20

[dataset]
path = "own.npz"
test_fraction = 0.25

[modalities.image]
likelihood = "bernoulli"
network = "mlp"

[modalities.vector]
likelihood = "normal"
hidden = [8, 8]
weight = 2.0
"""


def write_toml(tmp_path: Path, text: str = TOML, arrays: dict | None = None) -> Path:
    np.savez(tmp_path / "own.npz", **(own_arrays() if arrays is None else arrays))
    path = tmp_path / "my.toml"
    path.write_text(text)
    return path


def files_config(path: Path, **changes) -> RunConfig:
    modalities = {"image": {"likelihood": "bernoulli"}, "vector": {"likelihood": "normal"}}
    return RunConfig(dataset="files", data_path=str(path), modalities=changes.pop("modalities", modalities), **changes)


def test_toml_config_reads_the_dataset_table_and_modalities(tmp_path):
    path = write_toml(tmp_path)
    cfg = build_config(str(path), ["beta=0.5"])
    assert cfg.dataset == "files" and cfg.data_path == str((tmp_path / "own.npz").resolve())
    assert cfg.test_fraction == 0.25 and cfg.beta == 0.5 and cfg.hidden == [16]
    assert cfg.modalities["vector"] == {"likelihood": "normal", "hidden": [8, 8], "weight": 2.0}
    image, vector = build_modalities(cfg, {"image": (1, 6, 6), "vector": (5,)})
    assert isinstance(image.likelihood, Bernoulli) and isinstance(vector.likelihood, Normal)
    assert (image.weight, vector.weight) == (1.0, 2.0)
    widths = [m.out_features for m in vector.encoder.modules() if isinstance(m, nn.Linear)]
    assert widths[:2] == [8, 8]


def test_toml_dataset_table_names_a_built_in_dataset(tmp_path):
    path = tmp_path / "digits.toml"
    path.write_text('beta = 2.0\n[dataset]\nname = "digits"\nnum_views = 2\ncache_root = "cache"\n')
    assert read_config_file(path) == {"beta": 2.0, "dataset": "digits", "num_views": 2,
                                      "cache_root": str((tmp_path / "cache").resolve())}


def test_train_from_toml_then_the_run_loads(tmp_path, monkeypatch, capsys):
    path = write_toml(tmp_path)
    monkeypatch.chdir(tmp_path)
    status = main(["train", "--config", str(path), "--out", "run", "--no-progress", "--set", f"cache_root={tmp_path}"])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "pyromm: warning: " in err and "modality 'vector' is float64; converted to float32" in err  # one line each
    evaluation = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert set(evaluation["classifier_accuracy"]) == {"image", "vector"}
    loaded = pyromm.load(tmp_path / "run")
    assert loaded.config.dataset == "files" and list(loaded.modalities) == ["image", "vector"]
    assert loaded.modalities["vector"].weight == 2.0
    saved = torch.load(sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))[-1], weights_only=False)["model"]
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, saved[name]), name


def test_split_is_disjoint_seeded_and_complete(tmp_path):
    write_toml(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DtypeWarning)
        train, test = load_files(files_config(tmp_path / "own.npz", test_fraction=0.25))
        again, _ = load_files(files_config(tmp_path / "own.npz", test_fraction=0.25, seed=7))
    assert (len(train), len(test)) == (30, 10)
    assert torch.equal(train.data["vector"], again.data["vector"]), "the split does not depend on the run's seed"
    rows = torch.cat([train.data["vector"], test.data["vector"]])
    expected = torch.as_tensor(own_arrays()["vector"], dtype=torch.float32)
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, expected.tolist()))
    assert train.data["image"].dtype == torch.float32 and train.labels.dtype == torch.long


def test_a_folder_of_npy_and_pt_files_with_a_mask(tmp_path):
    arrays = own_arrays()
    folder = tmp_path / "data"
    folder.mkdir()
    np.save(folder / "image.npy", arrays["image"].astype(np.float32))
    torch.save(torch.as_tensor(arrays["vector"], dtype=torch.float32), folder / "vector.pt")
    np.save(folder / "labels.npy", arrays["labels"])
    mask = np.arange(N) % 2 == 0
    np.save(folder / "mask_vector.npy", mask)
    assert sorted(read_arrays(folder)) == ["image", "labels", "mask_vector", "vector"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DtypeWarning)  # float32 data: nothing to convert
        train, test = load_files(files_config(folder, test_fraction=0.5))
    assert "image" not in train.mask and len(train) + len(test) == N
    original = {tuple(np.float32(row).tolist()): (int(y), bool(m)) for row, y, m in zip(arrays["vector"], arrays["labels"], mask)}
    for split in (train, test):  # each sample keeps its own label and mask
        for row, label, observed in zip(split.data["vector"].tolist(), split.labels.tolist(), split.mask["vector"].tolist()):
            assert original[tuple(row)] == (label, observed)


def _error(tmp_path, exc, arrays=None, **changes) -> str:
    np.savez(tmp_path / "bad.npz", **(own_arrays() if arrays is None else arrays))
    with warnings.catch_warnings(), pytest.raises(exc) as info:
        warnings.simplefilter("ignore", DtypeWarning)
        cfg = files_config(tmp_path / "bad.npz", **changes)
        build_modalities(cfg, load_files(cfg)[0].event_shapes)
    return str(info.value)


def test_npz_missing_a_modality_named_in_the_config(tmp_path):
    arrays = own_arrays()
    del arrays["vector"]
    message = _error(tmp_path, OwnDataError, arrays)
    assert message == (
        f"{tmp_path / 'bad.npz'}: no array 'vector' for modality 'vector' named in the config; "
        "it holds ['image', 'labels']"
    )


def test_arrays_of_different_lengths(tmp_path):
    arrays = own_arrays()
    arrays["vector"] = arrays["vector"][:30]
    message = _error(tmp_path, OwnDataError, arrays)
    assert message == (
        f"{tmp_path / 'bad.npz'}: the modality arrays have different lengths (samples): {{'image': 40, 'vector': 30}}"
    )


def test_labels_of_the_wrong_length(tmp_path):
    arrays = own_arrays()
    arrays["labels"] = arrays["labels"][:39]
    assert _error(tmp_path, OwnDataError, arrays) == (
        f"{tmp_path / 'bad.npz'}: labels have shape (39,), expected (40,), one per sample"
    )


def test_bernoulli_on_values_outside_the_unit_interval(tmp_path):
    arrays = own_arrays()
    arrays["image"] = arrays["image"] * 255
    assert _error(tmp_path, OwnDataError, arrays) == (
        f"{tmp_path / 'bad.npz'}: modality 'image': likelihood 'bernoulli' needs values in [0, 1], the data span "
        "[0, 255] (rescale them, or choose likelihood 'normal' or 'laplace')"
    )


def test_a_likelihood_pyromm_does_not_have(tmp_path):
    modalities = {"image": {"likelihood": "poisson"}}
    assert _error(tmp_path, ConfigError, modalities=modalities) == (
        "modalities.image.likelihood must be one of ('laplace', 'normal', 'bernoulli', 'categorical'), got 'poisson'"
    )


def test_categorical_on_floats(tmp_path):
    modalities = {"vector": {"likelihood": "categorical", "num_classes": 4}}
    assert _error(tmp_path, OwnDataError, modalities=modalities) == (
        f"{tmp_path / 'bad.npz'}: modality 'vector': likelihood 'categorical' needs integer class indices, the data "
        "are float64 (store them as integers, or choose likelihood 'normal' or 'laplace')"
    )


def test_categorical_indices_out_of_range(tmp_path):
    arrays = {**own_arrays(), "tokens": np.tile(np.arange(5), (N, 1))}
    modalities = {"tokens": {"likelihood": "categorical", "num_classes": 4}}
    assert _error(tmp_path, OwnDataError, arrays, modalities=modalities) == (
        f"{tmp_path / 'bad.npz'}: modality 'tokens': likelihood 'categorical' with num_classes 4 needs class indices "
        "in 0..3, the data span 0..4"
    )
    assert _error(tmp_path, ConfigError, arrays, modalities={"tokens": {"likelihood": "categorical"}}) == (
        "modalities.tokens: likelihood 'categorical' needs num_classes, the number of classes"
    )
    assert _error(tmp_path, ConfigError, arrays, modalities={"tokens": {"num_classes": 4}}) == (
        "modalities.tokens: num_classes applies to likelihood 'categorical' only"
    )


def test_a_categorical_modality_trains_and_evaluates(tmp_path, monkeypatch, capsys):
    arrays = own_arrays()
    arrays["tokens"] = np.stack([arrays["labels"], (arrays["labels"] + 1) % 4, np.zeros(N, int)], 1).astype(np.int32)
    text = TOML + '\n[modalities.tokens]\nlikelihood = "categorical"\nnum_classes = 4\nhidden = [8]\n'
    path = write_toml(tmp_path, text, arrays)
    monkeypatch.chdir(tmp_path)
    status = main(["train", "--config", str(path), "--out", "run", "--no-progress", "--set", f"cache_root={tmp_path}"])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "modality 'tokens' is int32; converted to int64 (values kept)" in err
    tokens = pyromm_load(tmp_path / "run").modalities["tokens"]
    assert type(tokens.likelihood).__name__ == "Categorical" and tokens.likelihood.num_classes == 4
    evaluation = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert set(evaluation["classifier_accuracy"]) == {"image", "vector", "tokens"}


def test_float_labels_are_refused(tmp_path):
    arrays = own_arrays()
    arrays["labels"] = arrays["labels"].astype(np.float64)
    assert _error(tmp_path, OwnDataError, arrays) == (
        f"{tmp_path / 'bad.npz'}: labels are torch.float64, expected integer class indices 0..K-1"
    )


@pytest.mark.parametrize(
    "network, message",
    [
        ("no_such_package.nets:Nets", "modality 'vector': network 'no_such_package.nets:Nets': cannot import module "
         "'no_such_package.nets' (No module named 'no_such_package')"),
        ("torch.nn:NoSuchNet", "modality 'vector': network 'torch.nn:NoSuchNet': module 'torch.nn' has no attribute "
         "'NoSuchNet'"),
        ("transformer", "modalities.vector.network must be one of ('mlp', 'conv', 'resnet', 'spike_mlp') or an import "
         "path 'package.module:Name', got 'transformer'"),
    ],
)
def test_unknown_network_import_path(tmp_path, network, message):
    modalities = {"image": {"likelihood": "bernoulli"}, "vector": {"network": network}}
    assert _error(tmp_path, ConfigError, modalities=modalities) == message


class PairOfNets(nn.Module):
    """A user network family: an object holding an encoder and a decoder."""

    def __init__(self, event_shape: tuple[int, ...], latent_dim: int) -> None:
        super().__init__()
        size = int(np.prod(event_shape))
        self.encoder = UserEncoder(size, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, size), nn.Unflatten(1, event_shape))


class UserEncoder(nn.Module):
    def __init__(self, size: int, latent_dim: int) -> None:
        super().__init__()
        self.net = nn.Linear(size, 2 * latent_dim)

    def forward(self, x):
        return self.net(x.flatten(1)).chunk(2, dim=-1)


def test_a_user_network_by_import_path():
    cfg = RunConfig(latent_dim=3)
    encoder, decoder = networks("vector", ModalityOptions(network=f"{__name__}:PairOfNets"), (5,), 3, cfg)
    assert isinstance(encoder, UserEncoder)
    loc, log_var = encoder(torch.zeros(2, 5))
    assert loc.shape == log_var.shape == (2, 3) and decoder(loc).shape == (2, 5)
    with pytest.raises(ConfigError, match=re.escape("network 'torch.nn:Identity' returned Identity; expected an")):
        networks("vector", ModalityOptions(network="torch.nn:Identity"), (5,), 3, cfg)


def test_toml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text('model = "mmvm"\nepochs = 2\nbeta = = 1\n')
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert str(info.value) == f"config file {path}: TOML syntax error at line 3, column 8: Invalid value"
    assert main(["train", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"pyromm: error: config error: config file {path}: TOML syntax error at line 3, column 8: Invalid value\n"


def test_unknown_keys_name_the_file(tmp_path):
    path = write_toml(tmp_path, "epocs = 3\n")
    with pytest.raises(ConfigError, match=re.escape(f"config file {path}: unknown config key 'epocs' (did you mean 'epochs'?)")):
        read_config_file(path)
    path = write_toml(tmp_path, "[dataset]\npath = 'own.npz'\nformat = 'npz'\n")
    with pytest.raises(ConfigError, match=re.escape(f"config file {path}: unknown key 'format' in [dataset]")):
        read_config_file(path)


def test_files_dataset_needs_a_path():
    with pytest.raises(ConfigError, match="dataset 'files' needs data_path"):
        RunConfig(dataset="files")
