"""The folded fixed-scale Laplace and Normal likelihoods give torch's numbers, values and gradients."""
import pytest
import torch
from torch.distributions import Independent, Laplace, Normal

from pyromm import likelihoods
from pyromm.distributions import FixedScaleLaplace, FixedScaleNormal

CASES = [(FixedScaleLaplace, Laplace, likelihoods.Laplace), (FixedScaleNormal, Normal, likelihoods.Normal)]


@pytest.mark.parametrize("ours, theirs, _", CASES)
@pytest.mark.parametrize("event_dim", [0, 1, 3])
@pytest.mark.parametrize("scale", [0.75, 0.1, 2.0])
def test_log_prob_and_gradients_match_torch(ours, theirs, _, event_dim, scale):
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(5, 4, 3, 2, 6, generator=g, requires_grad=True)
    x = torch.randn(4, 3, 2, 6, generator=g)  # broadcasts against loc's leading sample dimension
    expected = Independent(theirs(loc, torch.full_like(loc, scale)), event_dim).log_prob(x)
    (grad_expected,) = torch.autograd.grad(expected.sum(), loc)
    got = ours(loc, scale, event_dim).log_prob(x)
    (grad,) = torch.autograd.grad(got.sum(), loc)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6 * expected.abs().max().item())
    torch.testing.assert_close(grad, grad_expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("ours, theirs, likelihood", CASES)
def test_distribution_behaves_as_the_independent_it_replaces(ours, theirs, likelihood):
    loc = torch.randn(8, 1, 4, 4)
    d = likelihood(3, 0.5).distribution(loc)
    assert isinstance(d, ours) and isinstance(d, Independent) and isinstance(d.base_dist, theirs)
    assert d.batch_shape == (8,) and d.event_shape == (1, 4, 4)
    assert torch.equal(d.mean, loc) and d.rsample((2,)).shape == (2, 8, 1, 4, 4)
    wide = d.expand((3, 8))
    assert isinstance(wide, ours) and wide.batch_shape == (3, 8)
    x = torch.rand(8, 1, 4, 4)
    torch.testing.assert_close(wide.log_prob(x), d.log_prob(x).expand(3, 8))


def test_non_positive_scale_is_refused():
    with pytest.raises(ValueError, match="scale must be positive"):
        FixedScaleLaplace(torch.zeros(2), 0.0, 1)
