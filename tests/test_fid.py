"""FID: the Fréchet distance against closed forms and an independent scipy implementation, FID of a set
against itself, the feature-network contract, and named errors for missing or wrong weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from fid_network import small_features
from torch import nn

from pyromm.config import ConfigError, RunConfig
from pyromm.run import evaluate_run, run, train

TOY_DATASET = str(Path(__file__).parent / "plugins" / "toy_dataset.py")

from pyromm.evaluation.fid import (
    WEIGHTS_ENV_VAR,
    FIDWeightsError,
    InceptionFeatures,
    feature_statistics,
    fid,
    frechet_distance,
    image_features,
)


def small_network() -> nn.Module:
    """A fixed conv feature extractor: (N, 3, H, W) -> (N, 6, 1, 1)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1))


def images(n: int, seed: int, channels: int = 1, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, channels, 12, 12, generator=g) * 0.8 + shift).clamp(0, 1)


def scipy_frechet(mu1, sigma1, mu2, sigma2) -> float:
    """The textbook formula with scipy's general matrix square root (as pytorch-fid computes it)."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * covmean))


def test_fid_of_a_set_against_itself_is_zero():
    network = small_network()
    extractor = InceptionFeatures(network, image_size=None)
    x, y = images(300, seed=0), images(300, seed=1, shift=0.15)
    assert 0.0 <= fid(x, x, extractor, batch_size=64) <= 1e-6
    with torch.no_grad():
        fx, fy = (network(v.expand(-1, 3, -1, -1)).flatten(1) for v in (x, y))
    other = fid(x, y, extractor)
    independent = scipy_frechet(*feature_statistics(fx), *feature_statistics(fy))
    assert other > 0 and other == pytest.approx(independent, rel=1e-6)


def test_frechet_distance_of_diagonal_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.1, 3.0, size=5), rng.uniform(0.1, 3.0, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))  # commuting covariances R diag(a) Rᵀ, R diag(b) Rᵀ
    rotated = frechet_distance(mu1, rotation @ np.diag(a) @ rotation.T, mu2, rotation @ np.diag(b) @ rotation.T)
    assert rotated == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_for_general_covariances():
    rng = np.random.default_rng(1)
    f = 6
    sigma1 = np.cov(rng.normal(size=(50, f)) @ rng.normal(size=(f, f)), rowvar=False)
    sigma2 = np.cov(rng.normal(size=(50, f)) @ rng.normal(size=(f, f)), rowvar=False)
    mu1, mu2 = rng.normal(size=f), rng.normal(size=f)
    ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert ours == pytest.approx(scipy_frechet(mu1, sigma1, mu2, sigma2), rel=1e-9)
    assert frechet_distance(mu2, sigma2, mu1, sigma1) == pytest.approx(ours, rel=1e-9)  # symmetric


def test_fid_of_two_gaussian_samples_matches_the_closed_form():
    """Features are the pixels themselves: two Gaussian samples in [0, 1] with diagonal covariances."""
    g = torch.Generator().manual_seed(2)
    n, f = 20000, 4
    mu1, mu2 = torch.tensor([0.5, 0.4, 0.6, 0.5]), torch.tensor([0.45, 0.5, 0.5, 0.55])
    sd1, sd2 = torch.tensor([0.05, 0.08, 0.06, 0.04]), torch.tensor([0.07, 0.05, 0.06, 0.09])
    x1 = (mu1 + sd1 * torch.randn(n, f, generator=g)).reshape(n, 1, 2, 2).double()
    x2 = (mu2 + sd2 * torch.randn(n, f, generator=g)).reshape(n, 1, 2, 2).double()
    pixels = nn.Flatten()
    value = fid(x1, x2, pixels, batch_size=5000)
    # per dimension a + b − 2√(ab) = (√a − √b)², with a, b the variances
    closed = float(((mu1 - mu2) ** 2).sum() + ((sd1 - sd2) ** 2).sum())
    assert value == pytest.approx(closed, rel=0.03)
    m1, s1 = feature_statistics(x1.flatten(1))
    m2, s2 = feature_statistics(x2.flatten(1))
    assert value == pytest.approx(scipy_frechet(m1, s1, m2, s2), rel=1e-9)


def test_feature_statistics_are_the_mean_and_unbiased_covariance():
    x = np.random.default_rng(3).normal(size=(40, 3))
    mu, sigma = feature_statistics(torch.from_numpy(x))
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, (x - x.mean(0)).T @ (x - x.mean(0)) / 39)
    assert feature_statistics(x[:, :1])[1].shape == (1, 1)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(x[:1])


def test_inception_features_repeat_grey_images_resize_and_flatten():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append(x)
            return x.mean((2, 3), keepdim=True)

    features = InceptionFeatures(Recorder(), image_size=16)(images(3, seed=4))
    assert seen[0].shape == (3, 3, 16, 16) and torch.equal(seen[0][:, 0], seen[0][:, 2])
    assert features.shape == (3, 3)


def test_weights_load_from_a_state_dict(tmp_path):
    trained = small_network()
    torch.save(trained.state_dict(), tmp_path / "inception.pth")
    fresh = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1))
    loaded = InceptionFeatures.from_weights(tmp_path / "inception.pth", fresh, image_size=None)
    x = images(5, seed=5, channels=3)
    torch.testing.assert_close(loaded(x), trained(x).flatten(1), rtol=0, atol=0)


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setenv("PYROMM_DATA", str(tmp_path / "data"))
    default = tmp_path / "data" / "fid" / "inception.pth"
    with pytest.raises(FIDWeightsError, match=f"no FID feature-network weights at {default}.*{WEIGHTS_ENV_VAR}"):
        InceptionFeatures.from_weights(None, small_network())
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(tmp_path / "elsewhere.pth"))
    with pytest.raises(FIDWeightsError, match=rf"elsewhere.pth \(\${WEIGHTS_ENV_VAR}\)"):
        InceptionFeatures.from_weights(None, small_network())
    with pytest.raises(FIDWeightsError, match=r"given.pth \(the path given\)"):
        InceptionFeatures.from_weights(tmp_path / "given.pth", small_network())
    torch.save(small_network().state_dict(), default.parent.mkdir(parents=True) or default)
    monkeypatch.delenv(WEIGHTS_ENV_VAR)
    assert isinstance(InceptionFeatures.from_weights(None, small_network()), InceptionFeatures)


def test_invalid_weights_are_refused_naming_the_file(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a state dict")
    with pytest.raises(FIDWeightsError, match="junk.pth is not a readable state dict"):
        InceptionFeatures.from_weights(junk, small_network())
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(FIDWeightsError, match="list.pth holds a list"):
        InceptionFeatures.from_weights(listed, small_network())
    other = tmp_path / "other.pth"
    torch.save(nn.Linear(2, 2).state_dict(), other)
    with pytest.raises(FIDWeightsError, match="other.pth do not fit Sequential"):
        InceptionFeatures.from_weights(other, small_network())


@pytest.mark.parametrize(
    "real, generated, message",
    [
        (images(4, 0), images(4, 1).squeeze(1), r"generated_images must have shape \(N, C, H, W\)"),
        (images(4, 0) * 2, images(4, 1), r"real_images must lie in \[0, 1\]"),
        (images(1, 0), images(4, 1), "real_images has 1 image"),
        (images(4, 0), (images(4, 1) * 255).long(), "generated_images have dtype torch.int64"),
    ],
)
def test_bad_images_are_refused_naming_the_set(real, generated, message):
    with pytest.raises(ValueError, match=message):
        fid(real, generated, InceptionFeatures(small_network(), image_size=None))


def test_uint8_images_are_scaled_and_a_wrong_feature_shape_is_refused():
    x = images(6, seed=6, channels=3)
    as_bytes = (x * 255).round().to(torch.uint8)
    extractor = InceptionFeatures(small_network(), image_size=None)
    torch.testing.assert_close(image_features(as_bytes, extractor), extractor(as_bytes.float() / 255))
    with pytest.raises(ValueError, match=r"feature extractor gave shape \(6, 3, 12, 12\)"):
        image_features(x, nn.Identity())


def test_a_run_reports_the_fid_of_each_image_modality_against_its_own_samples(tmp_path):
    """evaluate_run with fid_network: per image modality, FID(test images, as many model.sample(n) images)."""
    weights = tmp_path / "features.pt"
    torch.save(small_features().state_dict(), weights)
    cfg = RunConfig(model="mmvm", dataset="digits", num_views=2, epochs=1, train_limit=128, test_limit=64,
                    latent_dim=2, hidden=[16], classifier_epochs=1, classifier_train_limit=128, eval_num_train=128,
                    fid_network="fid_network:small_features", fid_weights=str(weights))
    model, _, train_set, test_set = train(cfg, tmp_path / "run", progress=False)
    results = evaluate_run(model, train_set, test_set, cfg, tmp_path / "run")
    assert sorted(results["fid"]) == ["m0", "m1"]
    extractor = InceptionFeatures.from_weights(weights, small_features())
    samples = model.sample(64, generator=torch.Generator().manual_seed(cfg.seed))
    for name, value in results["fid"].items():
        assert value == pytest.approx(fid(test_set.data[name], samples[name].clamp(0, 1), extractor), rel=1e-6)
        assert value > 0


def test_fid_weights_without_a_network_are_refused():
    with pytest.raises(ConfigError, match="fid_weights needs fid_network"):
        RunConfig(fid_weights="inception.pth")


def test_fid_without_weights_or_images_fails_before_training(tmp_path):
    """A missing weights file, or data without image modalities, is named before any step is taken."""
    settings = dict(model="mmvm", dataset="digits", num_views=2, epochs=1, train_limit=64, test_limit=16, latent_dim=2,
                    hidden=[8], fid_network="fid_network:small_features")
    with pytest.raises(FIDWeightsError, match="no FID feature-network weights at"):
        run(RunConfig(**settings, fid_weights=str(tmp_path / "missing.pt")), tmp_path / "a", progress=False)
    assert not (tmp_path / "a" / "checkpoints").exists()
    with pytest.raises(ConfigError, match="fid_network: dataset 'toy_linear_views' has no image modality"):
        train(RunConfig(plugins=[TOY_DATASET], dataset="toy_linear_views", model="mmvm", epochs=1, latent_dim=2,
                        hidden=[8], fid_network="fid_network:small_features"), tmp_path / "b", progress=False)
    assert not (tmp_path / "b" / "checkpoints").exists()
    weights = tmp_path / "features.pt"
    torch.save(small_features().state_dict(), weights)
    with pytest.raises(ConfigError, match="fid_network: model 'mmvm' generates through the latent sampler .* "
                                          "store_latent_sampler = false leaves it none"):
        run(RunConfig(**settings, fid_weights=str(weights), store_latent_sampler=False), tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / "checkpoints").exists()
