"""The objective layer against closed forms: KLs, the MMVM mixture prior, the Jensen bound, α = 1."""
import math

import pytest
import torch
import pyro
import pyro.distributions as dist
from torch import nn

from pyromm.data import MultimodalBatch, MultimodalDataset
from pyromm.distributions import DiagNormalMixture
from pyromm.infer import ELBOObjective, RateELBO, rate
from pyromm.likelihoods import Bernoulli, Laplace, Normal
from pyromm.models import MMVMPrior, Modality, independent_vaes, mmvm_vae

D = 3


class LinearEncoder(nn.Module):
    def __init__(self, d_in, d_lat):
        super().__init__()
        self.net = nn.Linear(d_in, 2 * d_lat)

    def forward(self, x):
        loc, log_var = self.net(x).chunk(2, -1)
        return loc, log_var


def make_modalities(names=("a", "b", "c"), dim=4, seed=0):
    torch.manual_seed(seed)
    return [Modality(n, LinearEncoder(dim, D), nn.Linear(D, dim), Laplace(1, 0.75), (dim,)) for n in names]


def make_batch(names=("a", "b", "c"), n=5, dim=4, seed=1, mask=None):
    g = torch.Generator().manual_seed(seed)
    return MultimodalBatch({k: torch.randn(n, dim, generator=g) for k in names}, mask=mask)


def random_gaussian(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return dist.Normal(torch.randn(shape, generator=g), torch.rand(shape, generator=g) + 0.3).to_event(1)


def test_analytic_kl_matches_monte_carlo():
    q, p = random_gaussian((4, D), 0), random_gaussian((4, D), 1)
    z = q.sample((200_000,))
    mc = rate(q, p, "mc", z).mean(0)
    torch.testing.assert_close(mc, rate(q, p, "analytic", z), atol=0.03, rtol=0.01)


def test_mmvm_prior_log_prob_equals_hand_computed_mixture():
    posteriors = {k: random_gaussian((2, D), i) for i, k in enumerate("abc")}
    batch = make_batch(n=2)
    alpha = 0.3
    h = MMVMPrior(alpha)(posteriors, batch, {})
    z = torch.randn(7, 2, D)
    dens = alpha * torch.exp(dist.Normal(0.0, 1.0).log_prob(z).sum(-1))
    for q in posteriors.values():
        dens = dens + (1 - alpha) / 3 * torch.exp(q.log_prob(z))
    torch.testing.assert_close(h.log_prob(z), dens.log(), rtol=1e-5, atol=1e-6)


def test_jensen_rate_is_never_below_mc_rate():
    posteriors = {k: random_gaussian((6, D), 10 + i) for i, k in enumerate("abc")}
    batch = make_batch(n=6)
    for alpha in (0.0, 0.2, 1.0):
        h = MMVMPrior(alpha)(posteriors, batch, {})
        for q in posteriors.values():
            z = q.sample((50_000,))
            mc = rate(q, h, "mc", z)
            exact_kl, stderr = mc.mean(0), mc.std(0) / math.sqrt(z.shape[0])
            assert bool((rate(q, h, "jensen", z) >= exact_kl - 4 * stderr - 1e-6).all())


def test_mixture_samples_have_the_mixture_moments():
    g = torch.Generator().manual_seed(3)
    mix = DiagNormalMixture(torch.randn(2, 3, D, generator=g), torch.rand(2, 3, D, generator=g) + 0.2,
                            torch.log_softmax(torch.randn(2, 3, generator=g), -1))
    s = mix.sample((100_000,))
    torch.testing.assert_close(s.mean(0), mix.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(s.var(0), mix.variance, atol=0.05, rtol=0.03)


@pytest.mark.parametrize("mode", ["jensen", "mc"])
def test_alpha_one_gives_exactly_the_independent_objective(mode):
    batch = make_batch()
    mmvm = mmvm_vae(make_modalities(), D, alpha=1.0)
    indep = independent_vaes(make_modalities(), D)
    torch.manual_seed(5)
    a = ELBOObjective(RateELBO(mode))(mmvm, batch, {"beta": 0.7})
    torch.manual_seed(5)
    b = ELBOObjective(RateELBO("analytic" if mode == "jensen" else "mc"))(indep, batch, {"beta": 0.7})
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-6, atol=1e-6)


def test_jensen_rate_is_the_reference_formula():
    """R = Σ_m [α KL(q_m ‖ N) + (1 − α)/M Σ_m' KL(q_m ‖ q_m')]."""
    batch = make_batch()
    model, alpha, beta = mmvm_vae(make_modalities(), D, alpha=0.25), 0.25, 1.0
    out = ELBOObjective(RateELBO("jensen"))(model, batch, {"beta": beta, "alpha": alpha})
    posts = model.encode(batch)
    std = dist.Normal(torch.zeros(5, D), 1.0).to_event(1)
    expected = 0.0
    for qm in posts.values():
        r = alpha * torch.distributions.kl_divergence(qm, std)
        for qk in posts.values():
            r = r + (1 - alpha) / 3 * torch.distributions.kl_divergence(qm, qk)
        expected = expected + r.mean()
    got = sum(v for k, v in out.terms.items() if k.startswith("rate/"))
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["jensen", "mc"])
def test_gradients_reach_every_encoder_through_the_prior(mode):
    model = mmvm_vae(make_modalities(), D)
    batch = make_batch()
    posts = model.encode(batch)
    h = model.conditional_priors(posts, batch, {})["a"]
    r = rate(posts["a"], h, mode, posts["a"].rsample()).sum()
    r.backward()
    for name in ("b", "c"):
        grad = model.encoders[name].net.weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_masked_modality_drops_out_of_the_mixture():
    mask = {"a": torch.tensor([True, True, False, True, True]), "b": torch.ones(5, dtype=torch.bool),
            "c": torch.ones(5, dtype=torch.bool)}
    batch = make_batch(mask=mask)
    model = mmvm_vae(make_modalities(), D)
    posts = model.encode(batch)
    h = model.conditional_priors(posts, batch, {})["b"]
    z = torch.randn(5, D)
    rest = torch.logsumexp(torch.stack([posts["b"].log_prob(z), posts["c"].log_prob(z)]), 0) - math.log(2)
    full = torch.logsumexp(torch.stack([posts[k].log_prob(z) for k in "abc"]), 0) - math.log(3)
    torch.testing.assert_close(h.log_prob(z)[2], rest[2])
    torch.testing.assert_close(h.log_prob(z)[0], full[0])


def test_full_mask_equals_no_mask():
    ones = {k: torch.ones(5, dtype=torch.bool) for k in "abc"}
    model = mmvm_vae(make_modalities(), D)
    torch.manual_seed(0)
    a = ELBOObjective(RateELBO("mc"))(model, make_batch(), {}).loss
    torch.manual_seed(0)
    b = ELBOObjective(RateELBO("mc"))(model, make_batch(mask=ones), {}).loss
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("prior", ["independent", "mmvm"])
def test_pyro_program_equals_fast_objective_with_mc_rate(prior):
    modalities = make_modalities()
    model = independent_vaes(modalities, D) if prior == "independent" else mmvm_vae(modalities, D, alpha=0.1)
    batch = make_batch()
    hyper = {"beta": 0.5}
    pyro.set_rng_seed(3)
    fast = ELBOObjective(RateELBO("mc"))(model, batch, hyper).loss
    pyro.set_rng_seed(3)
    general = ELBOObjective(pyro.infer.Trace_ELBO())(model, batch, hyper).loss
    torch.testing.assert_close(fast, general, rtol=1e-5, atol=1e-5)


def test_elbo_at_true_posterior_equals_log_evidence_linear_gaussian():
    """x_m = A_m z + b_m + σ ε with A_mᵀA_m diagonal, so p(z | x_m) is a diagonal Gaussian."""
    torch.manual_seed(0)
    d_x, sigma, n = 6, 0.5, 8
    modalities, log_px, data = [], 0.0, {}
    for name in ("a", "b"):
        q_mat, _ = torch.linalg.qr(torch.randn(d_x, D))
        s = torch.rand(D) + 0.5
        a_mat, b_vec = q_mat * s, torch.randn(d_x)
        post_var = 1.0 / (1.0 + s.pow(2) / sigma**2)

        class TrueEncoder(nn.Module):
            def forward(self, x, a_mat=a_mat, b_vec=b_vec, post_var=post_var):
                loc = (x - b_vec) @ a_mat / sigma**2 * post_var
                return loc, post_var.log().expand_as(loc)

        decoder = nn.Linear(D, d_x)
        with torch.no_grad():
            decoder.weight.copy_(a_mat)
            decoder.bias.copy_(b_vec)
        modalities.append(Modality(name, TrueEncoder(), decoder, Normal(1, sigma), (d_x,)))
        z = torch.randn(n, D)
        data[name] = z @ a_mat.T + b_vec + sigma * torch.randn(n, d_x)
        marginal = dist.MultivariateNormal(b_vec, a_mat @ a_mat.T + sigma**2 * torch.eye(d_x))
        log_px = log_px + marginal.log_prob(data[name]).mean()
    model = independent_vaes(modalities, D)
    out = ELBOObjective(RateELBO("mc"))(model, MultimodalBatch(data), {"beta": 1.0})
    torch.testing.assert_close(-out.loss, log_px.detach(), rtol=1e-4, atol=1e-4)


def test_alpha_outside_unit_interval_is_rejected():
    with pytest.raises(ValueError, match="alpha"):
        MMVMPrior(1.5)
    model = mmvm_vae(make_modalities(), D)
    with pytest.raises(ValueError, match="alpha must lie in"):
        ELBOObjective(RateELBO("jensen"))(model, make_batch(), {"alpha": -0.1})


def test_unknown_rate_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown rate mode"):
        RateELBO("exact")


def test_bad_batches_get_named_errors():
    model = mmvm_vae(make_modalities(), D)
    with pytest.raises(KeyError, match="unknown modality 'z'"):
        model.check_batch(MultimodalBatch({"z": torch.zeros(2, 4)}))
    with pytest.raises(ValueError, match=r"modality 'a': data shape \(2, 5\)"):
        model.check_batch(MultimodalBatch({"a": torch.zeros(2, 5)}))
    with pytest.raises(TypeError, match="modality 'b'.*float data"):
        model.check_batch(MultimodalBatch({"b": torch.zeros(2, 4, dtype=torch.long)}))
    bad = torch.zeros(2, 4)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="modality 'c': data contain NaN"):
        model.check_batch(MultimodalBatch({"c": bad}))
    mask = {k: torch.tensor([True, False]) for k in "abc"}
    with pytest.raises(ValueError, match="sample 1 of the batch has every modality masked"):
        model.check_batch(make_batch(n=2, mask=mask))


def test_encoder_with_wrong_latent_size_is_named():
    mods = make_modalities()
    mods[1] = Modality("b", LinearEncoder(4, D + 1), nn.Linear(D, 4), Laplace(1), (4,))
    model = mmvm_vae(mods, D)
    with pytest.raises(ValueError, match="modality 'b': encoder returned shapes"):
        model.check_batch(make_batch())


def test_dataset_check_names_the_modality_and_the_samples_at_fault():

    torch.manual_seed(0)
    mods = [Modality(n, LinearEncoder(4, D), nn.Linear(D, 4), Bernoulli(1), (4,)) for n in ("a", "b")]
    model = mmvm_vae(mods, D)
    data = {n: torch.rand(5000, 4) for n in ("a", "b")}
    data["b"][4500, 1] = 1.5
    with pytest.raises(ValueError, match=r"modality 'b': Bernoulli data must lie in \[0, 1\] \(in samples 4096..4999\)"):
        model.check_dataset(MultimodalDataset(data))


def test_posterior_scale_is_floored():
    model = mmvm_vae(make_modalities(), D)
    q = model.posterior_of(torch.zeros(2, D), torch.full((2, D), -1e4))
    assert bool((q.base_dist.scale >= 1e-6).all()) and bool(torch.isfinite(q.log_prob(torch.zeros(2, D))).all())


def test_event_shape_as_int_or_list_and_bad_shapes_are_named():
    enc, dec = LinearEncoder(4, D), nn.Linear(D, 4)
    assert Modality("a", enc, dec, Laplace(1), 4).event_shape == (4,)
    assert Modality("a", enc, dec, Laplace(1), [4]).event_shape == (4,)
    with pytest.raises(TypeError, match="modality 'a': event_shape must be an int or a sequence of ints, got 'x4'"):
        Modality("a", enc, dec, Laplace(1), "x4")
    with pytest.raises(ValueError, match=r"modality 'a': event_shape sizes must be >= 1, got \(0,\)"):
        Modality("a", enc, dec, Laplace(1), [0])
    with pytest.raises(ValueError, match="likelihood event_dim 3 does not match event_shape"):
        Modality("a", enc, dec, Laplace(3), 4)
