"""Property-based tests of the probabilistic core: closed forms and objective invariances."""
import math

import pyro.distributions as dist
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyromm.aggregation import product_of_experts
from pyromm.data import MultimodalBatch
from pyromm.distributions import DiagNormalMixture
from pyromm.infer import ELBOObjective, RateELBO, SubsetTarget
from pyromm.likelihoods import Laplace
from pyromm.models import Modality, mmvm_vae
from pyromm.nn import MLPDecoder, MLPEncoder

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


def draw(data, shape, low=-3.0, high=3.0):
    """A float64 tensor of ``shape`` with entries drawn by hypothesis from [low, high]."""
    values = data.draw(st.lists(st.floats(low, high), min_size=math.prod(shape), max_size=math.prod(shape)))
    return torch.tensor(values, dtype=torch.float64).reshape(shape)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.booleans(), st.booleans(), st.data())
def test_product_of_experts_matches_the_closed_form(m, b, d, prior_expert, masked, data):
    locs, log_scales = draw(data, (m, b, d)), draw(data, (m, b, d), -2.0, 2.0)
    observed = torch.ones(m, b, dtype=torch.bool)
    if masked:
        observed = torch.tensor(data.draw(st.lists(st.booleans(), min_size=m * b, max_size=m * b))).reshape(m, b)
        observed[data.draw(st.integers(0, m - 1)), ~observed.any(0)] = True  # every sample observes someone
    posteriors = {f"m{i}": dist.Normal(locs[i], log_scales[i].exp()).to_event(1) for i in range(m)}
    mask = {f"m{i}": observed[i] for i in range(m)} if masked else None
    q = product_of_experts(posteriors, mask, prior_expert=prior_expert)

    for sample in range(b):
        precision = torch.full((d,), float(prior_expert), dtype=torch.float64)
        weighted = torch.zeros(d, dtype=torch.float64)
        for i in range(m):
            if observed[i, sample]:
                precision += log_scales[i, sample].mul(-2).exp()
                weighted += locs[i, sample] * log_scales[i, sample].mul(-2).exp()
        torch.testing.assert_close(q.base_dist.scale[sample], precision.rsqrt(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(q.base_dist.loc[sample], weighted / precision, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.data())
def test_mixture_log_prob_matches_an_explicit_sum(k, b, d, data):
    locs, scales = draw(data, (b, k, d)), draw(data, (b, k, d), 0.3, 3.0)
    logits = draw(data, (b, k))
    dropped = data.draw(st.lists(st.booleans(), min_size=b * k, max_size=b * k))
    logits = logits.masked_fill(torch.tensor(dropped).reshape(b, k), -math.inf)
    logits[:, 0] = logits[:, 0].clamp(min=0.0)  # at least one component keeps weight
    log_weights = logits.log_softmax(-1)
    z = draw(data, (b, d))
    got = DiagNormalMixture(locs, scales, log_weights).log_prob(z)

    for sample in range(b):
        density = 0.0
        for c in range(k):
            w = math.exp(log_weights[sample, c])
            for j in range(d):
                mu, sigma, x = locs[sample, c, j].item(), scales[sample, c, j].item(), z[sample, j].item()
                w *= math.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
            density += w
        assert math.isclose(got[sample].item(), math.log(density), rel_tol=1e-10, abs_tol=1e-10)


class FixedNoise(dist.Normal):
    """A Normal whose ``rsample`` is ``loc + scale * eps`` for a given ``eps``: a deterministic ELBO."""

    def __init__(self, loc, scale, eps):
        super().__init__(loc, scale, validate_args=False)
        self.eps = eps

    def rsample(self, sample_shape=torch.Size()):
        return self.loc + self.scale * self.eps

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return FixedNoise(self.loc.expand(shape), self.scale.expand(shape), self.eps.expand(shape))


def mmvm_of(modalities, noise):
    """The MMVM VAE over ``modalities`` (in that order), each posterior sampling with ``noise[name]``."""
    model = mmvm_vae(modalities, latent_dim=2).double()
    encode = model.encode

    def fixed(batch):
        posteriors = encode(batch).items()
        return {n: FixedNoise(q.base_dist.loc, q.base_dist.scale, noise[n]).to_event(1) for n, q in posteriors}

    model.encode = fixed
    return model


def setup(m, b, seed):
    torch.manual_seed(seed)
    names = [f"m{i}" for i in range(m)]
    nets = {n: (MLPEncoder(3, 2, hidden=(6,)), MLPDecoder(2, 3, hidden=(6,))) for n in names}
    modalities = [Modality(n, *nets[n], Laplace(1), (3,)) for n in names]
    data = {n: torch.randn(b, 3, dtype=torch.float64) for n in names}
    noise = {n: torch.randn(b, 2, dtype=torch.float64) for n in names}
    return names, modalities, data, noise


HYPER = dict(beta=st.floats(0.0, 10.0), alpha=st.floats(0.0, 1.0))


@SETTINGS
@given(m=st.integers(2, 4), b=st.integers(1, 5), seed=st.integers(0, 2**16), data=st.data(), **HYPER)
def test_jensen_elbo_is_invariant_to_the_modality_order(m, b, seed, data, beta, alpha):
    names, modalities, x, noise = setup(m, b, seed)
    order = data.draw(st.permutations(range(m)))
    hyper, elbo = {"beta": beta, "alpha": alpha}, ELBOObjective(RateELBO("jensen"))
    out = elbo(mmvm_of(modalities, noise), MultimodalBatch(x), hyper)
    permuted = [modalities[i] for i in order]
    out_p = elbo(mmvm_of(permuted, noise), MultimodalBatch({names[i]: x[names[i]] for i in order}), hyper)
    torch.testing.assert_close(out_p.loss, out.loss, rtol=1e-12, atol=1e-12)
    assert out_p.terms.keys() == out.terms.keys()
    for key, value in out.terms.items():
        torch.testing.assert_close(out_p.terms[key], value, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(m=st.integers(1, 3), b=st.integers(1, 6), seed=st.integers(0, 2**16), data=st.data(), **HYPER)
def test_jensen_elbo_is_invariant_to_the_batch_order(m, b, seed, data, beta, alpha):
    names, modalities, x, noise = setup(m, b, seed)
    perm = torch.tensor(data.draw(st.permutations(range(b))), dtype=torch.long)
    hyper, elbo = {"beta": beta, "alpha": alpha}, ELBOObjective(RateELBO("jensen"))
    out = elbo(mmvm_of(modalities, noise), MultimodalBatch(x), hyper)
    noise_p = {n: e[perm] for n, e in noise.items()}
    out_p = elbo(mmvm_of(modalities, noise_p), MultimodalBatch({n: v[perm] for n, v in x.items()}), hyper)
    torch.testing.assert_close(out_p.loss, out.loss, rtol=1e-12, atol=1e-12)
    for key, value in out.terms.items():
        torch.testing.assert_close(out_p.terms[key], value, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(m=st.integers(1, 3), b=st.integers(1, 5), seed=st.integers(0, 2**16), **HYPER)
def test_jensen_elbo_with_an_all_ones_mask_equals_no_mask(m, b, seed, beta, alpha):
    names, modalities, x, noise = setup(m, b, seed)
    hyper, elbo = {"beta": beta, "alpha": alpha}, ELBOObjective(RateELBO("jensen"))
    model = mmvm_of(modalities, noise)
    out = elbo(model, MultimodalBatch(x), hyper)
    ones = {n: torch.ones(b, dtype=torch.bool) for n in names}
    out_masked = elbo(model, MultimodalBatch(x, mask=ones), hyper)
    torch.testing.assert_close(out_masked.loss, out.loss, rtol=1e-12, atol=1e-12)
    for key, value in out.terms.items():
        torch.testing.assert_close(out_masked.terms[key], value, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(
    size=st.integers(2, 3),
    power=st.sampled_from(["subset", "once"]),
    seed=st.integers(0, 2**16),
)
def test_subset_target_is_the_analytic_gaussian_up_to_a_constant(size, power, seed):
    """log π_S(z) = Σ_m log q_m(z) − c log p(z) differs from the closed-form Gaussian by a constant in z."""

    g = torch.Generator().manual_seed(seed)
    experts = {
        f"m{i}": dist.Normal(torch.randn(2, 3, generator=g, dtype=torch.float64),
                             0.3 + 0.6 * torch.rand(2, 3, generator=g, dtype=torch.float64)).to_event(1)
        for i in range(size)
    }
    prior = dist.Normal(torch.zeros(2, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)).to_event(1)
    target = SubsetTarget.from_posteriors(experts, list(experts), prior, prior_power=power)
    closed = target.closed_form()
    z = torch.randn(5, 2, 3, generator=g, dtype=torch.float64)
    difference = target(z) - closed.log_prob(z)
    torch.testing.assert_close(difference, difference[:1].expand_as(difference), rtol=0, atol=1e-9)
