"""End to end on the embedded digits: train, checkpoint, resume, reload, evaluate, bad configs."""
import json

import pytest
import torch

from pyromm.config import ConfigError, RunConfig
from pyromm.data import DataValidationError, MultimodalDataset
from pyromm.run import build_model, evaluate_run, load_run, train
from pyromm.train import CheckpointMismatchError
from method_options import for_method

TINY = dict(dataset="digits", latent_dim=4, hidden=[32], batch_size=64, train_limit=256, test_limit=128,
            classifier_train_limit=256,
            classifier_epochs=1, eval_num_train=256)


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("model", ["independent", "mmvm"])
def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path, model):
    cfg = RunConfig(model=model, epochs=3, **TINY)
    full, *_ = train(cfg, tmp_path / "full", progress=False)
    train(cfg.replace(epochs=1), tmp_path / "split", progress=False)
    resumed, *_ = train(cfg, tmp_path / "split", progress=False)
    a, b = params(full), params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


@pytest.mark.parametrize("family", ["mmvm", "mopoe", "mmvae", "mmvae_plus", "jmvae"])
def test_reloaded_run_gives_the_same_outputs(tmp_path, family):
    cfg = RunConfig(model=family, epochs=1, **for_method(family, num_importance_samples=2), **TINY)
    model, _, train_set, _ = train(cfg, tmp_path, progress=False)
    _, reloaded = load_run(tmp_path)
    assert type(reloaded) is type(model)
    batch = train_set.batch(slice(0, 8))
    z = torch.randn(8, cfg.latent_dim)
    for name in model.modality_names:
        torch.testing.assert_close(model.encode(batch)[name].mean, reloaded.encode(batch)[name].mean, rtol=0, atol=0)
        torch.manual_seed(0)
        expected = model.decode(name, z).mean
        torch.manual_seed(0)
        torch.testing.assert_close(reloaded.decode(name, z).mean, expected, rtol=0, atol=0)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    train(RunConfig(model="mmvm", epochs=1, **TINY), tmp_path, progress=False)
    with pytest.raises(CheckpointMismatchError):
        train(RunConfig(model="mmvm", epochs=2, **{**TINY, "latent_dim": 5}), tmp_path, progress=False)


def test_evaluation_writes_metrics_and_plots(tmp_path):
    cfg = RunConfig(model="mmvm", epochs=2, **TINY)
    model, _, train_set, test_set = train(cfg, tmp_path, progress=False)
    results = evaluate_run(model, train_set, test_set, cfg, tmp_path)
    for key in ("latent_acc_mean", "coherence_cross_mean", "rec_nll", "rec_mse"):
        assert key in results
    assert 0.0 <= results["latent_acc_mean"] <= 1.0
    for name in ("evaluation.json", "latent_scatter.png", "conditional_generation.png", "training_curves.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"beta": -1.0}, "beta must be >= 0"),
        ({"alpha": 1.5}, "alpha must lie in"),
        ({"latent_dim": "8"}, "latent_dim has type str"),
        ({"dataset": "cifar"}, "unknown dataset 'cifar'; datasets are digits, "),
        ({"num_views": 7}, r"num_views must be one of \(1, 2, 3, 4, 5\), got 7"),
    ],
)
def test_bad_configs_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict({**TINY, **changes})


def test_unknown_config_key_is_named():
    with pytest.raises(ConfigError, match="unknown config key 'betta'"):
        RunConfig.from_dict({"betta": 1.0})


def test_empty_dataset_is_refused():
    with pytest.raises(DataValidationError, match="empty"):
        MultimodalDataset({"m0": torch.zeros(0, 1, 8, 8)})


def test_conv_network_on_digits_is_refused():
    cfg = RunConfig(network="conv", **TINY)
    with pytest.raises(ConfigError, match=r"needs \(1\|3, 28, 28\) images; modality 'm0' is \(1, 8, 8\)"):
        build_model(cfg, {"m0": (1, 8, 8)})


@pytest.mark.parametrize("model", ["avg", "poe", "moe", "mopoe", "mopoe_reference", "mvae", "mvtcae", "jmvae", "telbo", "mmvae", "mmvae_plus"])
def test_every_shared_latent_model_trains_and_evaluates(tmp_path, model):
    cfg = RunConfig(model=model, epochs=2, kl_warmup_epochs=1, **for_method(model, num_random_subsets=1, num_importance_samples=2),
                    **TINY)
    trained, history, train_set, test_set = train(cfg, tmp_path, progress=False)
    assert history[-1]["epoch"] == 2 and torch.isfinite(torch.tensor(history[-1]["train/loss"]))
    results = evaluate_run(trained, train_set, test_set, cfg, tmp_path)
    assert 0.0 <= results["coherence_cross_mean"] <= 1.0


@pytest.mark.parametrize("model", ["mmvm", "mopoe_reference", "mvae", "mvtcae", "mmvae"])
def test_models_train_on_incomplete_data(tmp_path, model):
    cfg = RunConfig(model=model, epochs=1, keep_probability=0.5, **for_method(model, num_random_subsets=1, num_importance_samples=2),
                    **TINY)
    _, history, train_set, _ = train(cfg, tmp_path, progress=False)
    assert not bool(train_set.mask["m1"].all()) and bool(train_set.mask["m0"].all())
    assert torch.isfinite(torch.tensor(history[-1]["train/loss"]))


def test_joint_encoder_models_refuse_incomplete_batches(tmp_path):
    cfg = RunConfig(model="jmvae", epochs=1, keep_probability=0.5, **TINY)
    with pytest.raises(ValueError, match="JointEncoderVAE needs complete batches: modality 'm1' is missing .* train_complete_only=True"):
        train(cfg, tmp_path, progress=False)


def test_complete_only_training_keeps_complete_samples(tmp_path):
    cfg = RunConfig(model="jmvae", epochs=1, keep_probability=0.5, train_complete_only=True, **TINY)
    _, _, train_set, _ = train(cfg, tmp_path, progress=False)
    assert train_set.mask is None or all(bool(m.all()) for m in train_set.mask.values())
    assert len(train_set) < 256
