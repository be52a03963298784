"""Flow posteriors (nflows MAF wrapped as a Pyro distribution) and the MAF latent sampler."""
from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from scipy import stats
from torch.func import jacrev

from pyromm.distributions import FlowConfigError, FlowPosterior, MAFSampler, maf


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: intra-op threads only contend on a shared CPU (10x slower with 2 threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturb(transform, std: float = 0.3, seed: int = 0) -> None:
    """Random output layers, so the flow is far from the identity and nonlinear."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in transform._transforms:
            if hasattr(layer, "autoregressive_net"):
                final = layer.autoregressive_net.final_layer
                final.weight.copy_(torch.randn(final.weight.shape, generator=generator) * std)
                final.bias.copy_(torch.randn(final.bias.shape, generator=generator) * std)


def gaussian(batch: int, dim: int, seed: int = 0) -> dist.Independent:
    generator = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch, dim, generator=generator)
    scale = torch.rand(batch, dim, generator=generator) + 0.5
    return dist.Normal(loc, scale).to_event(1)


def change_of_variables(transform, base, z, context=None) -> torch.Tensor:
    """log N(f(z)) + log|det J_f(z)| with J_f from autograd, one point at a time."""
    out = []
    for i in range(z.shape[0]):
        ctx = None if context is None else context[i : i + 1]

        def f(x, ctx=ctx):
            return transform(x[None], ctx)[0][0]

        jac = jacrev(f)(z[i])
        u = f(z[i])
        out.append(base.base_dist.log_prob(u).sum(-1)[i] + torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


@pytest.mark.parametrize("permutation", ["reverse", "random"])
def test_log_prob_is_change_of_variables(permutation):
    torch.manual_seed(0)
    transform = maf(3, num_blocks=3, hidden_features=16, permutation=permutation)
    perturb(transform)
    base = gaussian(5, 3)
    q = FlowPosterior(base, transform)
    z = torch.randn(5, 3)
    expected = change_of_variables(transform, base, z)
    assert torch.allclose(q.log_prob(z), expected, atol=1e-4)
    stacked = torch.stack([z, z + 0.1])  # extra leading sample dimension
    assert q.log_prob(stacked).shape == (2, 5)
    assert torch.allclose(q.log_prob(stacked)[0], expected, atol=1e-4)
    assert torch.allclose(q.log_prob(z[:1].expand(4, 5, 3)), q.log_prob(z[:1].expand(5, 3)).expand(4, 5), atol=1e-5)


def test_context_conditioned_log_prob_is_change_of_variables():
    torch.manual_seed(1)
    transform = maf(3, hidden_features=16, context_features=4)
    perturb(transform)
    base = gaussian(5, 3)
    context = torch.randn(5, 4)
    z = torch.randn(5, 3)
    q = FlowPosterior(base, transform, context)
    assert torch.allclose(q.log_prob(z), change_of_variables(transform, base, z, context), atol=1e-4)


@pytest.mark.parametrize("num_blocks,permutation", [(2, "reverse"), (3, "reverse"), (3, "random")])
def test_identity_init_reproduces_the_base(num_blocks, permutation):
    base = gaussian(4, 6)
    q = FlowPosterior(base, maf(6, num_blocks=num_blocks, hidden_features=32, permutation=permutation))
    z = base.sample((3,))
    assert torch.allclose(q.log_prob(z), base.log_prob(z), atol=1e-5)
    torch.manual_seed(7)
    flow_draws = q.rsample((3,))
    torch.manual_seed(7)
    base_draws = base.rsample((3,))
    assert torch.allclose(flow_draws, base_draws, atol=1e-5)


def test_samples_follow_the_density():
    """KS test of each coordinate's draws against the marginal CDF integrated from exp(log_prob) on a grid."""
    torch.manual_seed(0)
    transform = maf(2, hidden_features=32)
    perturb(transform)
    base = dist.Normal(torch.tensor([0.5, -1.0]), torch.tensor([0.8, 1.2])).to_event(1)
    q = FlowPosterior(base, transform)
    with torch.no_grad():
        z = q.sample((3000,))
        lo, hi = z.min(0).values - 2.0, z.max(0).values + 2.0
        n = 300
        axes = [torch.linspace(lo[d], hi[d], n) for d in range(2)]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
        density = q.log_prob(grid).exp().reshape(n, n)
    steps = [float(a[1] - a[0]) for a in axes]
    assert abs(float(density.sum()) * steps[0] * steps[1] - 1.0) < 2e-3
    assert stats.kstest(z[:, 0].numpy(), stats.norm(0.5, 0.8).cdf).pvalue < 1e-6  # the flow is far from the base
    for d in range(2):
        marginal = density.sum(1 - d) * steps[1 - d]
        cdf = (torch.cumsum(marginal, 0) * steps[d]).numpy()
        grid_d = axes[d].numpy()
        assert stats.kstest(z[:, d].numpy(), lambda x: np.interp(x, grid_d, cdf)).pvalue > 1e-3
    with torch.no_grad():  # the round trip f(f^{-1}(u)) = u
        u = base.sample((50,))
        assert torch.allclose(transform(transform.inverse(u)[0])[0], u, atol=1e-4)


def test_rsample_gradients_reach_the_base_and_the_flow():
    transform = maf(4, hidden_features=16)
    loc = torch.zeros(3, 4, requires_grad=True)
    log_scale = torch.zeros(3, 4, requires_grad=True)
    def q():
        return FlowPosterior(dist.Normal(loc, log_scale.exp()).to_event(1), transform)

    q().rsample((2,)).pow(2).sum().backward()
    assert loc.grad.abs().sum() > 0 and log_scale.grad.abs().sum() > 0
    finals = [t.autoregressive_net.final_layer for t in transform._transforms if hasattr(t, "autoregressive_net")]
    assert all(final.weight.grad.abs().sum() > 0 and final.bias.grad.abs().sum() > 0 for final in finals)
    perturb(transform)
    transform.zero_grad()
    q().rsample((2,)).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in transform.parameters())


def test_context_changes_the_flow_and_gets_gradients():
    torch.manual_seed(2)
    transform = maf(3, hidden_features=16, context_features=2)
    perturb(transform)
    standard = dist.Normal(torch.zeros(3), torch.ones(3)).to_event(1)
    context = torch.tensor([[0.0, 0.0], [3.0, -3.0]], requires_grad=True)
    q = FlowPosterior(standard, transform, context)
    assert q.batch_shape == (2,) and q.event_shape == (3,)
    z = torch.randn(3)
    log_q = q.log_prob(z)
    assert log_q.shape == (2,) and not torch.allclose(log_q[0], log_q[1])
    torch.manual_seed(3)
    draws = q.rsample((5,))
    assert draws.shape == (5, 2, 3)
    draws.sum().backward()
    assert context.grad.abs().sum() > 0
    torch.manual_seed(3)  # the same noise through f^{-1}(·; c) differs between the two contexts
    u = standard.sample((5,))
    assert not torch.allclose(draws[:, 0] - u, draws[:, 1] - u)


def _model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)


def _guide(transform, context=None):
    def guide(x):
        pyro.module("flow", transform)
        loc = pyro.param("loc", torch.zeros_like(x))
        log_scale = pyro.param("log_scale", torch.zeros_like(x))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", FlowPosterior(dist.Normal(loc, log_scale.exp()).to_event(1), transform, context))

    return guide


@pytest.mark.parametrize("conditional", [False, True])
def test_guide_site_in_a_plate_with_trace_elbo(conditional):
    pyro.clear_param_store()
    torch.manual_seed(0)
    x = torch.randn(6, 3)
    transform = maf(3, hidden_features=16, context_features=2 if conditional else None)
    context = torch.randn(6, 2) if conditional else None
    guide = _guide(transform, context)
    # One particle: Trace_ELBO's loss is -(log p(x, z) - log q(z)) at the guide's draw.
    pyro.set_rng_seed(1)
    loss = Trace_ELBO().loss(_model, guide, x)
    pyro.set_rng_seed(1)
    q = FlowPosterior(dist.Normal(torch.zeros(6, 3), torch.ones(6, 3)).to_event(1), transform, context)
    z = q.rsample()
    log_joint = dist.Normal(0.0, 1.0).log_prob(z).sum() + dist.Normal(z, 0.5).log_prob(x).sum()
    assert loss == pytest.approx(float(-(log_joint - q.log_prob(z).sum()).detach()), rel=1e-5)
    # Vectorised particles expand the site to batch shape (particles, data).
    before = [p.detach().clone() for p in transform.parameters()]
    svi = SVI(_model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO(num_particles=4, vectorize_particles=True))
    losses = [svi.step(x) for _ in range(5)]
    assert all(np.isfinite(losses))
    assert any(not torch.equal(b, p) for b, p in zip(before, transform.parameters()))


def test_expand_broadcasts_base_and_context():
    transform = maf(2, hidden_features=8, context_features=3)
    perturb(transform)
    q = FlowPosterior(gaussian(4, 2), transform, torch.randn(4, 3))
    wide = q.expand((5, 4))
    assert wide.batch_shape == (5, 4) and wide.rsample().shape == (5, 4, 2)
    z = torch.randn(4, 2)
    assert torch.allclose(wide.log_prob(z), q.log_prob(z).expand(5, 4), atol=1e-6)


def test_bad_flow_configurations_are_named_errors():
    base = gaussian(2, 16)
    with pytest.raises(FlowConfigError, match="flow dimension 8 does not match the latent dimension 16"):
        FlowPosterior(base, maf(8, hidden_features=8))
    with pytest.raises(FlowConfigError, match="unconditional"):
        FlowPosterior(base, maf(16, hidden_features=8), torch.randn(2, 3))
    conditional = maf(16, hidden_features=8, context_features=3)
    with pytest.raises(FlowConfigError, match="none was given"):
        FlowPosterior(base, conditional)
    with pytest.raises(FlowConfigError, match="context of 3 features"):
        FlowPosterior(base, conditional, torch.randn(2, 4))
    with pytest.raises(FlowConfigError, match="does not broadcast"):
        FlowPosterior(base, conditional, torch.randn(5, 3))
    with pytest.raises(FlowConfigError, match="permutation"):
        maf(4, permutation="shuffle")


def test_maf_sampler_recovers_a_gaussian():
    torch.manual_seed(0)
    mean = torch.tensor([2.0, -1.0])
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.5]])
    target = dist.MultivariateNormal(mean, cov)
    latents = target.sample((2000,))
    sampler = MAFSampler(hidden_features=32, epochs=8, batch_size=200, lr=5e-3, seed=0).fit(latents)
    assert sampler.losses[-1] < sampler.losses[0]
    torch.manual_seed(1)
    draws = sampler.sample(4000)
    assert draws.shape == (4000, 2)
    assert torch.allclose(draws.mean(0), mean, atol=0.1)
    assert torch.allclose(torch.cov(draws.T), cov, atol=0.2)
    test = target.sample((2000,))
    with torch.no_grad():  # held-out log-likelihood close to the truth's
        assert float(sampler.log_prob(test).mean()) > float(target.log_prob(test).mean()) - 0.03
    again = MAFSampler(hidden_features=32, epochs=2, batch_size=200, lr=5e-3, seed=0).fit(latents)
    assert again.losses == sampler.losses[:2]  # seeded fit
    with pytest.raises(ValueError, match="dimension 3"):
        sampler.log_prob(torch.randn(5, 3))
    with pytest.raises(RuntimeError, match="not fitted"):
        MAFSampler().sample(3)
