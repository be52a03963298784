"""MixtureStratum: draws of one component, densities of the whole mixture, under plates and detaching."""
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyromm.distributions import MixtureStratum
from pyromm.infer import detach_parameters

B, D = 3, 2


def mixture_and_component():
    loc = torch.randn(B, 2, D, requires_grad=True)
    scale = torch.rand(B, 2, D) + 0.5
    components = dist.Laplace(loc, scale).to_event(1)
    mixture = dist.MixtureSameFamily(dist.Categorical(logits=torch.zeros(B, 2)), components)
    return mixture, dist.Laplace(loc[:, 0], scale[:, 0]).to_event(1), loc


def test_draws_follow_the_component_and_densities_the_mixture():
    mixture, component, _ = mixture_and_component()
    stratum = MixtureStratum(mixture, component)
    assert stratum.batch_shape == (B,) and stratum.event_shape == (D,) and stratum.has_rsample
    torch.manual_seed(0)
    z = stratum.rsample((4,))
    torch.manual_seed(0)
    torch.testing.assert_close(z, component.rsample((4,)))
    assert z.requires_grad and not stratum.sample().requires_grad
    torch.testing.assert_close(stratum.log_prob(z), mixture.log_prob(z))
    assert not torch.allclose(stratum.log_prob(z), component.log_prob(z))


def test_a_plate_expands_both_and_keeps_the_noise_of_a_sample_shape():
    mixture, component, _ = mixture_and_component()
    torch.manual_seed(1)
    with pyro.plate("particles", 4, dim=-2), pyro.plate("data", B, dim=-1):
        z = pyro.sample("z", MixtureStratum(mixture, component))
    torch.manual_seed(1)
    torch.testing.assert_close(z, component.rsample((4,)))
    expanded = MixtureStratum(mixture, component).expand((4, B))
    assert expanded.batch_shape == (4, B) and expanded.log_prob(z).shape == (4, B)
    torch.testing.assert_close(expanded.log_prob(z), mixture.log_prob(z))


def test_detach_parameters_detaches_the_mixture_and_the_component():
    mixture, component, _ = mixture_and_component()
    detached = detach_parameters(MixtureStratum(mixture, component).expand((4, B)))
    z = detached.rsample()
    assert not z.requires_grad and not detached.log_prob(z).requires_grad
    torch.testing.assert_close(detached.log_prob(z), mixture.log_prob(z))


def test_shapes_must_agree():
    mixture, _, loc = mixture_and_component()
    with pytest.raises(ValueError, match=r"component \(batch \(2,\)"):
        MixtureStratum(mixture, dist.Laplace(loc[:2, 0], 1.0).to_event(1))
