"""Runs you can load: pyromm.load for CLI and Python-API runs, pyromm evaluate and collect on both kinds."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import pyromm
from pyromm.cli import main
from pyromm.config import ConfigError, RunConfig
from pyromm.run import train
from method_options import for_method
from pyromm.data.own import DtypeWarning, load_files
from pyromm.infer import ELBOObjective, RateELBO
from pyromm.likelihoods import Bernoulli, Normal
from pyromm.models import Modality, mmvm_vae
from pyromm.nn import MLPDecoder, MLPEncoder
from pyromm.saved_runs import RunLoadError
from pyromm.train import Trainer
from pyromm.train.checkpoint import CheckpointMismatchError

from test_own_data import TOML, own_arrays


def build_model(latent_dim: int, hidden: int) -> torch.nn.Module:
    """An MMVM VAE on the (1, 6, 6) image and (5,) vector of ``own_arrays``, built by hand."""
    torch.manual_seed(0)
    image = Modality("image", MLPEncoder((1, 6, 6), latent_dim, (hidden,)), MLPDecoder(latent_dim, (1, 6, 6), (hidden,)),
                     Bernoulli(3), (1, 6, 6))
    vector = Modality("vector", MLPEncoder(5, latent_dim, (hidden,)), MLPDecoder(latent_dim, 5, (hidden,)), Normal(1), 5)
    return mmvm_vae([image, vector], latent_dim, alpha=0.5)


def python_api_run(tmp_path: Path, name: str, config: dict | None = None) -> Path:
    np.savez(tmp_path / "own.npz", **own_arrays())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DtypeWarning)
        train, _ = load_files(RunConfig(dataset="files", data_path=str(tmp_path / "own.npz")))
    run_dir = tmp_path / "results" / name
    Trainer(build_model(3, 16), ELBOObjective(RateELBO("jensen")), epochs=1, batch_size=16, run_dir=run_dir,
            progress=False, config=config).fit(train)
    return run_dir


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(sorted((run_dir / "checkpoints").glob("*.pt"))[-1], weights_only=False)["model"]


def test_python_api_run_with_a_recorded_builder_loads_by_itself(tmp_path):
    run_dir = python_api_run(tmp_path, "built", pyromm.builder_config(build_model, latent_dim=3, hidden=16))
    loaded = pyromm.load(run_dir)
    assert loaded.config is None and loaded.saved_config["builder"]["path"] == "test_saved_runs:build_model"
    assert list(loaded.modalities) == ["image", "vector"] and not loaded.model.training
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, _weights(run_dir)[name]), name


def test_python_api_run_without_builder_says_what_to_pass(tmp_path):
    run_dir = python_api_run(tmp_path, "by_hand")
    with pytest.raises(RunLoadError) as info:
        pyromm.load(run_dir)
    assert str(info.value) == (
        f"{run_dir} was trained with the Python API and config.json records no builder, so its model "
        "(MultimodalVAE, latent_dim 3, modalities image (1, 6, 6), vector (5,)) cannot be rebuilt: build it as for "
        "training and pass it, pyromm.load(run_dir, model=model), or record the builder when training: "
        "Trainer(..., config=pyromm.builder_config(build, **kwargs))"
    )
    loaded = pyromm.load(run_dir, model=build_model(3, 16))
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, _weights(run_dir)[name]), name
    with pytest.raises(RunLoadError, match="latent_dim is 4, the run's is 3"):
        pyromm.load(run_dir, model=build_model(4, 16))
    with pytest.raises(CheckpointMismatchError) as info:  # same config, other widths: the checkpoint's signature
        pyromm.load(run_dir, model=build_model(3, 8))
    checkpoint = sorted((run_dir / "checkpoints").glob("*.pt"))[-1]
    assert str(info.value) == f"parameter 'decoders.image.body.0.bias' has shape (16,) in checkpoint {checkpoint} but (8,) in the model"


def test_builder_must_be_importable():
    def local_builder() -> torch.nn.Module:
        return build_model(3, 16)

    with pytest.raises(ConfigError, match="define it at module level"):
        pyromm.builder_config(local_builder)
    with pytest.raises(ConfigError, match="JSON-able"):
        pyromm.builder_config(build_model, latent_dim=torch.tensor(3), hidden=16)


def test_evaluate_and_collect_on_python_api_runs(tmp_path, capsys):
    built = python_api_run(tmp_path, "built", pyromm.builder_config(build_model, latent_dim=3, hidden=16))
    by_hand = python_api_run(tmp_path, "by_hand")
    # no data named: one line saying how to evaluate it
    assert main(["evaluate", str(built)]) == 2
    assert capsys.readouterr().err == (
        f"pyromm: error: config error: {built} was trained with the Python API and its config.json names no dataset: "
        "pass --config FILE.toml with a [dataset] table (and the evaluation settings), or evaluate it in Python with "
        "pyromm.evaluation.evaluate(pyromm.load(run_dir).model, ...)\n"
    )
    config = tmp_path / "my.toml"
    config.write_text(TOML)
    assert main(["evaluate", str(by_hand), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "records no builder, so pyromm evaluate cannot rebuild its model" in err
    # collect names the runs it skips and why
    main(["collect", str(tmp_path / "results")])
    out = capsys.readouterr().err  # no run is evaluated: collect fails, naming every run it skipped and why
    assert f"built: trained with the Python API and not evaluated: pyromm evaluate {built} --config" in out
    assert f"by_hand: trained with the Python API and not evaluated: pyromm evaluate {by_hand} --config" in out
    # data of other modalities: one line naming both
    digits = tmp_path / "digits.toml"
    digits.write_text('[dataset]\nname = "digits"\nnum_views = 2\n')
    assert main(["evaluate", str(built), "--config", str(digits)]) == 2
    assert capsys.readouterr().err == (
        "pyromm: error: config error: the evaluation data have modalities {'m0': (1, 8, 8), 'm1': (1, 8, 8)}, the "
        f"model of {built} has {{'image': (1, 6, 6), 'vector': (5,)}}: point --config at data of the same modalities "
        "and shapes\n"
    )
    # with the data named, it evaluates
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DtypeWarning)
        status = main(["evaluate", str(built), "--config", str(config), "--set", f"cache_root={tmp_path}"])
    assert status == 0, capsys.readouterr().err
    results = json.loads((built / "evaluation.json").read_text())
    assert 0.0 <= results["latent_acc_mean"] <= 1.0 and set(results["classifier_accuracy"]) == {"image", "vector"}
    assert main(["collect", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "skipped built" not in out and "skipped by_hand" in out
    assert json.loads((tmp_path / "results" / "results.json").read_text())[0]["run"] == "built"


@pytest.mark.parametrize("model", ["independent", "mmvm", "mopoe", "mvae", "jmvae", "telbo", "mmvae", "mmvae_plus", "jnf"])
def test_cli_runs_of_every_family_load_with_their_weights(tmp_path, model):
    cfg = RunConfig(model=model, epochs=2, train_limit=64, test_limit=8, batch_size=32, latent_dim=4, hidden=[16],
                    **for_method(model, num_importance_samples=2, flow_hidden=8, flow_blocks=1))
    trained, *_ = train(cfg, tmp_path, progress=False)
    loaded = pyromm.load(tmp_path)
    assert loaded.config == cfg and type(loaded.model) is type(trained)
    assert loaded.model.config() == trained.config()
    for name, value in trained.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value.cpu()), name


def test_a_saved_config_this_pyromm_cannot_read_names_the_file(tmp_path):
    train(RunConfig(model="mmvm", epochs=1, train_limit=32, test_limit=8, batch_size=32, latent_dim=2, hidden=[8]),
          tmp_path, progress=False)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["run"]["data_path"] = None  # a key of another layout: here an option of the files dataset
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'config.json'}: 'data_path' is an option of dataset files.*"
                                          "probably by another pyromm version"):
        pyromm.load(tmp_path)
