"""IWAE and DReG on shared-latent models: K = 1 is the ELBO, the bound tightens with K towards log p(x)
on a linear-Gaussian model, and DReG's gradient is unbiased for IWAE's with a lower encoder variance."""
import math

import pytest
import torch
from torch import nn

from pyromm.aggregation import mixture_of_experts
from pyromm.data import LinearGaussianMultimodal, MultimodalBatch
from pyromm.infer import DReG, ELBOObjective, IWAE, RateELBO, detach_parameters, iwae_bound
from oracles import dreg_surrogate
from pyromm.likelihoods import Laplace, Normal
from pyromm.models import Modality, SharedLatentVAE

D = 2


class LinearEncoder(nn.Module):
    def __init__(self, d_in):
        super().__init__()
        self.net = nn.Linear(d_in, 2 * D)

    def forward(self, x):
        return self.net(x).chunk(2, -1)


def small_vae(aggregation="poe"):
    torch.manual_seed(0)
    mods = [Modality(n, LinearEncoder(4), nn.Linear(D, 4), Laplace(1, 0.75), (4,), weight=w)
            for n, w in (("a", 1.0), ("b", 2.5))]
    return SharedLatentVAE(mods, D, aggregation)


def small_batch(n=5, mask=None):
    g = torch.Generator().manual_seed(1)
    return MultimodalBatch({k: torch.randn(n, 4, generator=g) for k in "ab"}, mask=mask)


LG = LinearGaussianMultimodal(D, {"a": 3, "b": 3}, noise=0.5, seed=0)


def linear_gaussian_vae(widen=0.0, perturb=0.0, seed=0):
    """The true decoders and Normal likelihoods; encoders = exact unimodal posteriors (mean, diagonal variance)
    with log-variances raised by ``widen`` and weights perturbed, combined by PoE (a mismatched joint q)."""
    g = torch.Generator().manual_seed(seed)
    mods = []
    for name, d in LG.dims.items():
        a, b, s = LG.weights[name], LG.biases[name], LG.noise[name]
        cov = torch.linalg.inv(torch.eye(D, dtype=torch.float64) + a.T @ a / s**2)
        gain = cov @ a.T / s**2
        encoder, decoder = LinearEncoder(d), nn.Linear(D, d)
        with torch.no_grad():
            encoder.net.weight.copy_(torch.cat([gain, torch.zeros(D, d, dtype=torch.float64)]))
            encoder.net.bias.copy_(torch.cat([-gain @ b, cov.diagonal().log() + widen]))
            decoder.weight.copy_(a)
            decoder.bias.copy_(b)
            encoder.net.weight.add_(perturb * torch.randn(encoder.net.weight.shape, generator=g))
            decoder.weight.add_(perturb * torch.randn(decoder.weight.shape, generator=g))
        mods.append(Modality(name, encoder, decoder, Normal(1, s), (d,)))
    return SharedLatentVAE(mods, D, "poe")


def linear_gaussian_batch(n, seed=1):
    return next(LG.sample(n, generator=torch.Generator().manual_seed(seed)).batches(n, shuffle=False))


def test_iwae_bound_and_dreg_surrogate_are_the_formulas():
    lw = torch.tensor([[0.0, -1.0], [2.0, -3.0], [1.0, 5.0]], requires_grad=True)
    expected = torch.log(lw.detach().exp().mean(0))
    torch.testing.assert_close(iwae_bound(lw), expected)
    mask = torch.tensor([[True], [False], [True]])
    torch.testing.assert_close(iwae_bound(lw, mask), torch.log((lw.detach()[[0, 2]].exp()).mean(0)))
    z = (torch.arange(6.0).reshape(3, 2, 1) * lw.detach().unsqueeze(-1)).requires_grad_()
    w = torch.softmax(lw.detach(), 0)
    value = dreg_surrogate(lw, z)
    torch.testing.assert_close(value, (w * lw.detach()).sum(0))
    (value.sum() + z.sum()).backward()
    torch.testing.assert_close(lw.grad, w)  # the weights are constants
    torch.testing.assert_close(z.grad, w.unsqueeze(-1))  # the hook rescales every gradient reaching z


def test_detach_parameters_cuts_gradients_but_keeps_the_density():
    model = small_vae("moe")
    q = mixture_of_experts(model.encode(small_batch()), stratified=False)
    z = torch.randn(3, 5, D)
    q_bar = detach_parameters(q)
    torch.testing.assert_close(q_bar.log_prob(z), q.log_prob(z))
    assert q.log_prob(z).requires_grad and not q_bar.log_prob(z).requires_grad
    assert q.locs.requires_grad  # the original is untouched


@pytest.mark.parametrize("mask", [None, {"a": torch.tensor([True, False, True, True, False])}])
def test_iwae_with_one_sample_is_the_elbo(mask):
    model, batch, hyper = small_vae(), small_batch(mask=mask), {"beta": 0.6}
    torch.manual_seed(3)
    iwae = ELBOObjective(IWAE(1))(model, batch, hyper).loss
    iwae_grads = torch.autograd.grad(iwae, list(model.parameters()))
    torch.manual_seed(3)
    elbo = ELBOObjective(RateELBO("mc"))(model, batch, hyper).loss
    elbo_grads = torch.autograd.grad(elbo, list(model.parameters()))
    torch.testing.assert_close(iwae, elbo)
    for a, b in zip(iwae_grads, elbo_grads):
        torch.testing.assert_close(a, b)


def test_iwae_bound_rises_with_k_towards_the_exact_log_evidence():
    """Means over seeds of the batch-mean bound: L_1 < L_10 < L_100 ≤ log p(x), and L_2000 ≈ log p(x)."""
    model, batch = linear_gaussian_vae(widen=1.0), linear_gaussian_batch(128)
    exact = LG.log_marginal(batch.data).mean().item()
    means, errors = {}, {}
    with torch.no_grad():
        for k, seeds in ((1, 8), (10, 8), (100, 8), (2000, 2)):
            values = []
            for seed in range(seeds):
                torch.manual_seed(seed)
                values.append(-ELBOObjective(IWAE(k))(model, batch, {}).loss.item())
            values = torch.tensor(values)
            means[k], errors[k] = values.mean().item(), values.std().item() / math.sqrt(seeds)
    for small, large in ((1, 10), (10, 100)):
        assert means[large] - means[small] > 2 * math.hypot(errors[small], errors[large]), (means, errors)
    for k, value in means.items():
        assert value <= exact + 3 * errors[k] + 1e-3, (k, value, exact)
    assert exact - means[1] > 0.3  # the encoder is far enough off for the test to mean something
    assert abs(means[2000] - exact) < 0.01, (means[2000], exact)


def gradient_draws(objective, model, batch, seeds):
    """One flattened gradient (all parameters) per seed."""
    draws = []
    for seed in seeds:
        torch.manual_seed(seed)
        model.zero_grad()
        objective(model, batch, {}).loss.backward()
        draws.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return torch.stack(draws)


@pytest.mark.parametrize("k", [10, 50])
def test_dreg_gradient_is_unbiased_for_iwae_with_lower_encoder_variance(k):
    """Each draw averages R replicas of 8 points (independent samples per row); the draws of the two estimators
    share their noise, so the paired difference of the encoder gradients has mean 0 within 5 standard errors,
    the decoder gradients agree draw by draw, and DReG's encoder gradients vary far less."""
    model = linear_gaussian_vae(widen=0.3, perturb=0.1)
    replicas, draws = 25, 20
    batch = linear_gaussian_batch(8)
    batch = MultimodalBatch({n: x.repeat(replicas, 1) for n, x in batch.data.items()})
    iwae = gradient_draws(ELBOObjective(IWAE(k)), model, batch, range(draws))
    dreg = gradient_draws(ELBOObjective(DReG(k)), model, batch, range(draws))
    encoder = torch.cat([torch.full((p.numel(),), name.startswith("encoders."))
                         for name, p in model.named_parameters()])
    diff = dreg - iwae
    z_scores = diff.mean(0) / (diff.std(0) / math.sqrt(draws))
    assert z_scores[encoder].abs().max() < 5, z_scores
    signal = dreg[:, encoder].mean(0).abs() / (dreg[:, encoder].std(0) / math.sqrt(draws))
    assert signal.max() > 5  # there is a gradient to be unbiased for
    torch.testing.assert_close(dreg[:, ~encoder], iwae[:, ~encoder], rtol=1e-4, atol=1e-5)
    ratio = dreg[:, encoder].var(0).sum() / iwae[:, encoder].var(0).sum()
    assert ratio < 0.5, ratio


def test_beta_scales_the_prior_and_posterior_terms():
    model, batch = small_vae(), small_batch()
    torch.manual_seed(0)
    lw1, _, sites, _ = IWAE(4).log_weights(model.model, model.guide, (batch, {"beta": 1.0}), {})
    z = sites[0]["value"]
    torch.manual_seed(0)
    lw0, _, _, _ = IWAE(4).log_weights(model.model, model.guide, (batch, {"beta": 0.0}), {})
    q = model.joint(batch)
    torch.testing.assert_close(lw1 - lw0, model.prior(batch).log_prob(z) - q.log_prob(z))


def test_dreg_and_iwae_report_the_same_bound():
    model, batch = small_vae(), small_batch()
    torch.manual_seed(2)
    iwae = ELBOObjective(IWAE(6))(model, batch, {})
    torch.manual_seed(2)
    dreg = ELBOObjective(DReG(6))(model, batch, {})
    torch.testing.assert_close(dreg.terms["iwae"], -iwae.loss.detach())


def test_stratified_mixture_posterior_is_rejected():
    with pytest.raises(ValueError, match="i.i.d."):
        ELBOObjective(IWAE(3))(small_vae("moe"), small_batch(), {})


@pytest.mark.parametrize("k", [0, -2, 1.5])
def test_bad_number_of_samples_is_named(k):
    for cls in (IWAE, DReG):
        with pytest.raises(ValueError, match=f"num_particles={k}"):
            cls(k)
