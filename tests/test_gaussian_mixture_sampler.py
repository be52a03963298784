"""The Gaussian-mixture latent sampler recovers a known mixture and round-trips without pickling."""
import pytest
import torch

from pyromm.distributions import GaussianMixtureSampler


def known_mixture():
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    means = torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, -1.0]], dtype=torch.float64)
    scale_tril = torch.tensor([[[1.0, 0.0], [0.3, 0.5]], [[0.6, 0.0], [0.0, 0.6]], [[0.8, 0.0], [-0.4, 0.4]]],
                              dtype=torch.float64)
    components = torch.distributions.MultivariateNormal(means, scale_tril=scale_tril)
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(probs=weights), components)


def test_fit_recovers_a_known_gaussian_mixture():
    torch.manual_seed(0)
    truth = known_mixture()
    data = truth.sample((6000,))
    sampler = GaussianMixtureSampler(3, seed=0).fit(data)
    order = sampler.means[:, 0].argsort()
    torch.testing.assert_close(sampler.weights[order], truth.mixture_distribution.probs, atol=0.03, rtol=0)
    torch.testing.assert_close(sampler.means[order], truth.component_distribution.mean, atol=0.1, rtol=0)
    torch.testing.assert_close(sampler.covariances[order], truth.component_distribution.covariance_matrix,
                               atol=0.1, rtol=0)
    held_out = truth.sample((2000,))
    gap = truth.log_prob(held_out).mean() - sampler.log_prob(held_out).mean()
    assert abs(float(gap)) < 0.02


def test_samples_follow_the_fitted_density_and_state_round_trips():
    torch.manual_seed(1)
    sampler = GaussianMixtureSampler(3, seed=0).fit(known_mixture().sample((3000,)))
    draws = sampler.sample(20000, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (20000, 2) and draws.dtype == torch.float32
    torch.testing.assert_close(draws.double().mean(0), sampler.distribution().mean, atol=0.05, rtol=0)
    reloaded = GaussianMixtureSampler.from_state({k: v.clone() for k, v in sampler.state().items()})
    z = torch.randn(5, 2)
    torch.testing.assert_close(reloaded.log_prob(z), sampler.log_prob(z))


@pytest.mark.parametrize("kind", ["diag", "spherical", "tied"])
def test_other_covariance_types_give_full_matrices(kind):
    torch.manual_seed(2)
    sampler = GaussianMixtureSampler(2, covariance_type=kind).fit(torch.randn(500, 3))
    assert sampler.covariances.shape == (2, 3, 3)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="finite \\(N, D\\) matrix"):
        GaussianMixtureSampler(2).fit(torch.full((10, 2), float("nan")))
    with pytest.raises(RuntimeError, match="not fitted"):
        GaussianMixtureSampler(2).sample(3)
