"""Methods and datasets register themselves: a toy method and a toy dataset, each one file, trained from the CLI;
every config key in ``pyromm train --help``; unknown names and keys answered with the closest one."""
import importlib.metadata
import json
from pathlib import Path

import pytest
import torch

import pyromm
from pyromm.cli import main
from pyromm.config import RunConfig, general_options
from pyromm.config_file import read_config_file
from pyromm.datasets import DATASETS
from pyromm.methods import METHODS, Method
from pyromm.options import ConfigError, Registry, describe
from pyromm.plugins import ENTRY_POINT_GROUP, load_installed_plugins

PLUGINS = Path(__file__).parent / "plugins"
TOY_METHOD, TOY_DATASET = str(PLUGINS / "toy_method.py"), str(PLUGINS / "toy_dataset.py")
TOY_RUN = ["--set", f"plugins={json.dumps([TOY_METHOD, TOY_DATASET])}", "--set", "model=toy_scaled_prior",
           "--set", "dataset=toy_linear_views", "--set", "prior_scale=0.5", "--set", "num_samples=200",
           "--set", "epochs=2", "--set", "batch_size=50", "--set", "latent_dim=2", "--set", "hidden=[16]",
           "--set", "likelihood=normal", "--set", "likelihood_scale=0.1"]


def test_a_method_and_a_dataset_in_one_file_each_train_from_the_cli_and_load_back(tmp_path, capsys):
    run_dir = tmp_path / "toy"
    assert main(["train", "--out", str(run_dir), *TOY_RUN, "--no-eval", "--no-progress"]) == 0
    assert "training toy_scaled_prior (beta 1) on toy_linear_views, 2 epochs" in capsys.readouterr().out
    saved = json.loads((run_dir / "config.json").read_text())["run"]
    assert saved["prior_scale"] == 0.5 and saved["num_samples"] == 200
    assert saved["plugins"] == [str(Path(TOY_METHOD).resolve()), str(Path(TOY_DATASET).resolve())]
    loaded = pyromm.load(run_dir)
    assert loaded.config.model == "toy_scaled_prior" and loaded.model.conditional_prior.scale == 0.5
    assert set(loaded.modalities) == {"a", "b"}
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2] and history[1]["train/loss"] < history[0]["train/loss"]


def test_the_toy_methods_prior_is_the_one_its_option_names():
    """The rate of the toy method is KL(q ‖ N(0, s² I)) in closed form, s = prior_scale."""
    cfg = RunConfig(plugins=[TOY_METHOD, TOY_DATASET], model="toy_scaled_prior", dataset="toy_linear_views",
                    prior_scale=0.5, latent_dim=2, hidden=[8])
    method = METHODS["toy_scaled_prior"]
    model = method.model(cfg, {"a": (5,), "b": (3,)})
    train, _ = DATASETS["toy_linear_views"].load(cfg)
    batch = train.batch(slice(0, 16))
    _, terms = method.elbo(cfg).loss_and_terms(model.model, model.guide, batch, {"beta": 1.0})
    q = model.encode(batch)["a"].base_dist
    s = 0.5
    expected = (torch.log(s / q.scale) + (q.scale**2 + q.loc**2) / (2 * s**2) - 0.5).sum()
    torch.testing.assert_close(terms["rate/a"], expected, rtol=1e-5, atol=1e-5)


def test_methods_and_datasets_list_their_options(capsys):
    assert main(["methods", "--plugins", TOY_METHOD, "--", "toy_scaled_prior", "mmvm"]) == 0
    out = capsys.readouterr().out
    assert "toy_scaled_prior: independent VAEs under a N(0, s² I) prior" in out
    assert "prior_scale (float, default 1.0): s, the standard deviation of the N(0, s² I) prior" in out
    assert "alpha (float | None, default None)" in out
    assert main(["datasets", "digits"]) == 0
    assert "num_views (int, default 3)" in capsys.readouterr().out


def test_train_help_lists_every_config_key(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    keys = [o.name for o in general_options()]
    keys += [o.name for registry in (METHODS, DATASETS) for entry in registry for o in describe(entry.Options)]
    missing = [key for key in keys if f"{key} (" not in text]
    assert not missing and len(keys) > 60


@pytest.mark.parametrize(
    "setting, message",
    [
        ("alpah=0.5", "unknown config key 'alpah' (did you mean 'alpha'?)"),
        ("model=mmvn", "unknown method 'mmvn' (did you mean 'mmvm'?)"),
        ("dataset=polymnst", "unknown dataset 'polymnst' (did you mean 'polymnist'?)"),
        ("flow_blocks=3", "'flow_blocks' is an option of methods jnf, jnf_shared, not of model 'mmvm' or dataset "
                          "'digits', which would ignore it: remove flow_blocks"),
        ("num_views=2", None),
    ],
)
def test_unknown_names_and_keys_get_the_closest_one(setting, message, tmp_path, capsys):
    status = main(["train", "--out", str(tmp_path), "--set", setting, "--set", "epochs=0"])
    err = capsys.readouterr().err
    if message is None:  # a known key: the error is about epochs=0 instead
        assert status == 2 and "epochs must be >= 1" in err
    else:
        assert status == 2 and message in err


def test_a_plugin_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(ConfigError, match=f"plugins: file {tmp_path / 'nope.py'} does not exist"):
        RunConfig(plugins=[str(tmp_path / "nope.py")])


def test_a_name_registers_once():
    registry: Registry[Method] = Registry("method")
    registry.register(METHODS["mmvm"])
    with pytest.raises(ValueError, match="a method named 'mmvm' is already registered"):
        registry.register(METHODS["mmvm"])


def test_changing_the_method_starts_from_its_defaults():
    cfg = RunConfig(model="mmvm", alpha=0.5)
    changed = cfg.replace(model="mvtcae")
    assert changed.alpha == 0.1 and "alpha_schedule" not in changed.to_dict()
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(AttributeError, match=r"use cfg.replace\(alpha=...\)"):
        cfg.alpha = 0.3
    assert cfg.alpha == 0.5


def test_a_config_file_takes_a_plugin_datasets_options_in_its_dataset_table(tmp_path):
    """The file's plugins are imported before its [dataset] table is read, so the table may hold their options."""
    toml = tmp_path / "toy.toml"
    toml.write_text(f'plugins = {json.dumps([TOY_METHOD, TOY_DATASET])}\nmodel = "toy_scaled_prior"\n'
                    '[dataset]\nname = "toy_linear_views"\nnum_samples = 120\n')
    values = read_config_file(toml)
    cfg = RunConfig.from_dict(values)
    assert cfg.dataset == "toy_linear_views" and cfg.num_samples == 120


def test_a_path_option_stays_one_folder_name_in_the_cache_key():
    cfg = RunConfig(dataset="polymnist", released_path="/data/PolyMNIST")
    key = DATASETS["polymnist"].cache_key(cfg)
    assert "/" not in key and key.startswith("polymnist-num_views3-released_path")
    assert key != DATASETS["polymnist"].cache_key(cfg.replace(released_path="/data/other"))


def test_installed_packages_register_through_the_entry_point_group(monkeypatch):
    found = importlib.metadata.EntryPoint(name="toy", value="plugins.entry_point_method", group=ENTRY_POINT_GROUP)
    groups = []

    def entry_points(group):
        groups.append(group)
        return [found]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    load_installed_plugins()
    assert groups == ["pyromm.plugins"] and RunConfig(model="toy_entry_point").model == "toy_entry_point"
