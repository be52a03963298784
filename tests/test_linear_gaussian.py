"""Exact posteriors and marginals of the linear-Gaussian multimodal model, checked independently."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import MultivariateNormal

from pyromm.data import LinearGaussianMultimodal, MultimodalDataset

DIMS = {"a": 3, "b": 5, "c": 2}
NOISE = {"a": 0.3, "b": 0.5, "c": 0.2}


@pytest.fixture(scope="module")
def model() -> LinearGaussianMultimodal:
    return LinearGaussianMultimodal(latent_dim=4, dims=DIMS, noise=NOISE, seed=0)


@pytest.fixture(scope="module")
def sample(model):
    return model.sample(64, generator=torch.Generator().manual_seed(1), return_latent=True)


def _joint(model, names):
    """Mean and covariance of the stacked (z, x_names) under the generative model."""
    d = model.latent_dim
    a = torch.cat([model.weights[m] for m in names])
    b = torch.cat([model.biases[m] for m in names])
    noise = torch.cat([torch.full((model.dims[m],), model.noise[m] ** 2, dtype=torch.float64) for m in names])
    cov = torch.zeros(d + len(b), d + len(b), dtype=torch.float64)
    cov[:d, :d] = torch.eye(d, dtype=torch.float64)
    cov[:d, d:] = a.T
    cov[d:, :d] = a
    cov[d:, d:] = a @ a.T + torch.diag(noise)
    return torch.cat([torch.zeros(d, dtype=torch.float64), b]), cov


def _conditional(model, data, names):
    """p(z | x_names) by Gaussian conditioning of the joint covariance."""
    d = model.latent_dim
    mean, cov = _joint(model, names)
    x = torch.cat([data[m].double() for m in names], dim=-1)
    gain = torch.linalg.solve(cov[d:, d:], cov[d:, :d]).T
    post_mean = (x - mean[d:]) @ gain.T
    post_cov = cov[:d, :d] - gain @ cov[d:, :d]
    return post_mean, post_cov


def test_sample_contract(model, sample):
    ds, z = sample
    assert isinstance(ds, MultimodalDataset) and len(ds) == 64
    assert ds.event_shapes == {"a": (3,), "b": (5,), "c": (2,)}
    assert all(x.dtype == torch.float32 for x in ds.data.values())
    assert z.shape == (64, 4) and z.dtype == torch.float64
    residual = ds.data["b"].double() - (z @ model.weights["b"].T + model.biases["b"])
    assert 0.3 < float(residual.std()) < 0.7
    again, z2 = model.sample(64, generator=torch.Generator().manual_seed(1), return_latent=True)
    assert torch.equal(z, z2) and torch.equal(again.data["a"], ds.data["a"])


def test_seeded_parameters():
    first = LinearGaussianMultimodal(2, {"x": 3}, noise=0.1, seed=3)
    second = LinearGaussianMultimodal(2, {"x": 3}, noise=0.1, seed=3)
    other = LinearGaussianMultimodal(2, {"x": 3}, noise=0.1, seed=4)
    assert torch.equal(first.weights["x"], second.weights["x"])
    assert not torch.equal(first.weights["x"], other.weights["x"])


@pytest.mark.parametrize("subset", [None, ["a"], ["b", "c"], ["c", "a"]])
def test_posterior_matches_joint_conditioning(model, sample, subset):
    data = sample[0].data
    mean, cov = model.posterior(data, subset)
    names = list(DIMS) if subset is None else subset
    ref_mean, ref_cov = _conditional(model, data, names)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(cov, ref_cov, rtol=1e-9, atol=1e-10)
    assert mean.dtype == torch.float64 and mean.shape == (64, 4) and cov.shape == (4, 4)


@pytest.mark.parametrize("subset", [None, ["b"], ["a", "c"]])
def test_log_marginal_matches_mvn(model, sample, subset):
    data = sample[0].data
    names = list(DIMS) if subset is None else subset
    mean, cov = _joint(model, names)
    d = model.latent_dim
    x = torch.cat([data[m].double() for m in names], dim=-1)
    expected = MultivariateNormal(mean[d:], covariance_matrix=cov[d:, d:]).log_prob(x)
    torch.testing.assert_close(model.log_marginal(data, subset), expected, rtol=1e-10, atol=1e-9)


def test_log_likelihood(model, sample):
    ds, z = sample
    x = ds.data["a"]
    mean = z @ model.weights["a"].T + model.biases["a"]
    expected = torch.distributions.Normal(mean, 0.3).log_prob(x.double()).sum(-1)
    torch.testing.assert_close(model.log_likelihood("a", z, x), expected)
    stacked = model.log_likelihood("a", torch.stack([z, z + 1.0]), x)
    assert stacked.shape == (2, 64)
    torch.testing.assert_close(stacked[0], expected)


def test_posterior_concentrates_on_true_latent():
    model = LinearGaussianMultimodal(3, {"x": 40, "y": 40}, noise=0.05, seed=2)
    ds, z = model.sample(32, generator=torch.Generator().manual_seed(0), return_latent=True)
    mean, _ = model.posterior(ds.data)
    assert float((mean - z).abs().max()) < 0.1


def test_errors_and_empty_subset(model, sample):
    data = sample[0].data
    mean, cov = model.posterior(data, [])
    assert torch.equal(mean, torch.zeros(64, 4, dtype=torch.float64))
    assert torch.equal(cov, torch.eye(4, dtype=torch.float64))
    assert torch.equal(model.log_marginal(data, []), torch.zeros(64, dtype=torch.float64))
    with pytest.raises(KeyError, match="unknown modality"):
        model.posterior(data, ["nope"])
    with pytest.raises(KeyError, match="not in the data"):
        model.posterior({"a": data["a"]}, ["b"])
    with pytest.raises(ValueError, match="shape"):
        model.posterior({"a": data["a"][:, :2]})
    with pytest.raises(ValueError, match="noise"):
        LinearGaussianMultimodal(2, {"x": 1, "y": 1}, noise={"x": 0.1})
