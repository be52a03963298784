"""MMVAE against ALGORITHMS.md §4.1 written out with explicit loops over samples b, modalities r, draws k and
mixture components m; the learnable prior scale; the Laplace mixture posterior; missing modalities."""
import itertools

import pytest
import torch
import pyro.distributions as dist
from torch import nn

from pyromm.data import MultimodalBatch
from pyromm.likelihoods import Laplace
from pyromm.models import Modality
from pyromm.models.mmvae import MMVAE, MMVAEObjective

D, DIM, B, K = 2, 4, 3, 4
NAMES = ("a", "b", "c")
WEIGHTS = {"a": 1.0, "b": 2.5, "c": 0.5}  # λ_d
VARIANTS = list(itertools.product(("dreg", "iwae"), ("looser", "tight")))


class LinearEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(DIM, 2 * D)

    def forward(self, x):
        return self.net(x).chunk(2, -1)


def make_model(learn_prior=True, names=NAMES):
    torch.manual_seed(0)
    mods = [Modality(n, LinearEncoder(), nn.Linear(D, DIM), Laplace(1, 0.75), (DIM,), weight=WEIGHTS[n])
            for n in names]
    model = MMVAE(mods, D, learn_prior=learn_prior)
    with torch.no_grad():
        model.prior_logits.copy_(torch.tensor([0.4, -0.3]))
    return model


def make_batch(names=NAMES, mask=None, n=B):
    g = torch.Generator().manual_seed(1)
    return MultimodalBatch({k: torch.randn(n, DIM, generator=g) for k in names}, mask=mask)


def laplace_log_density(x, loc, scale):
    return (-(x - loc).abs() / scale - torch.log(2 * scale)).sum(-1)


def reference_loss(model, batch, estimator, bound, seed):
    """−1/B Σ_b objective_b of ALGORITHMS.md §4.1, one scalar at a time. For DReG the path
    z ↦ w̃ z + (1 − w̃) stopgrad(z) carries w̃ on top of the surrogate's w̃ (the reference's hook)."""
    names = list(batch.data)
    m_count = len(names)
    locs, scales = {}, {}
    for n in names:
        loc, logits = model.encoders[n](batch.data[n])
        locs[n], scales[n] = loc, torch.softmax(logits, -1) * D + 1e-6
    torch.manual_seed(seed)
    z = {n: dist.Laplace(locs[n], scales[n]).rsample((K,)) for n in names}  # z[r][k, b]
    prior_scale = torch.softmax(model.prior_logits, -1) * D
    detach = estimator == "dreg"

    def log_weight(b, r, zz):
        lpz = laplace_log_density(zz, torch.zeros(D), prior_scale)
        lpx = sum(WEIGHTS[d] * laplace_log_density(batch.data[d][b], model.decoders[d](zz), torch.tensor(0.75))
                  for d in names)
        mixture = 0.0
        for m in names:
            loc, scale = (locs[m][b].detach(), scales[m][b].detach()) if detach else (locs[m][b], scales[m][b])
            mixture = mixture + torch.exp(laplace_log_density(zz, loc, scale)) / m_count
        return lpz + lpx - torch.log(mixture)

    total = 0.0
    for b in range(B):
        pairs = [(r, k) for r in names for k in range(K)]
        lw = {(r, k): log_weight(b, r, z[r][k, b]) for r, k in pairs}
        groups = [pairs] if bound == "tight" else [[(r, k) for k in range(K)] for r in names]
        objective = 0.0
        for group in groups:
            values = torch.stack([lw[p] for p in group])
            if estimator == "iwae":
                objective = objective + torch.log(torch.exp(values).mean())
            else:
                w = torch.softmax(values.detach(), 0)
                for p, w_p in zip(group, w):
                    hooked = w_p * z[p[0]][p[1], b] + (1 - w_p) * z[p[0]][p[1], b].detach()
                    objective = objective + w_p * log_weight(b, p[0], hooked)
        total = total + objective / len(groups)
    return -total / B


@pytest.mark.parametrize("estimator,bound", VARIANTS)
def test_objective_equals_the_reference_formula_with_its_gradients(estimator, bound):
    model, batch = make_model(), make_batch()
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(7)
    out = MMVAEObjective(K, estimator, bound)(model, batch, {})
    got = torch.autograd.grad(out.loss, params)
    expected_loss = reference_loss(model, batch, estimator, bound, seed=7)
    expected = torch.autograd.grad(expected_loss, params)
    torch.testing.assert_close(out.loss, expected_loss, rtol=1e-5, atol=1e-5)
    for (name, _), g, e in zip(model.named_parameters(), got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5, msg=name)


def test_dreg_and_iwae_report_the_same_bound_and_tight_is_above_looser():
    model, batch = make_model(), make_batch()
    bounds = {}
    for estimator, bound in VARIANTS:
        torch.manual_seed(3)
        out = MMVAEObjective(K, estimator, bound)(model, batch, {})
        bounds[estimator, bound] = out.terms["iwae"]
        if estimator == "iwae":
            torch.testing.assert_close(out.terms["iwae"], -out.loss.detach())
    for bound in ("looser", "tight"):
        torch.testing.assert_close(bounds["dreg", bound], bounds["iwae", bound])
    assert bounds["iwae", "tight"] >= bounds["iwae", "looser"]  # log-mean-exp of a pool ≥ mean of per-r ones


@pytest.mark.parametrize("learn_prior", [True, False])
def test_prior_scale_is_learnable_only_with_learn_prior(learn_prior):
    model = MMVAE(make_model().modalities.values(), D, learn_prior=learn_prior)
    batch = make_batch()
    torch.testing.assert_close(model.prior(batch).base_dist.scale, torch.ones(B, D))  # ℓ_p = 0: unit scales
    assert model.prior_logits.requires_grad == learn_prior
    MMVAEObjective(K)(model, batch, {}).loss.backward()
    if learn_prior:
        assert model.prior_logits.grad is not None and model.prior_logits.grad.abs().sum() > 0
        assert any(p is model.prior_logits for p in model.parameters())
    else:
        assert model.prior_logits.grad is None
    model = make_model(learn_prior)
    scale = torch.softmax(torch.tensor([0.4, -0.3]), 0) * D
    torch.testing.assert_close(model.prior(batch).base_dist.scale[0], scale)
    draws = model.sample_prior(20_000)
    assert draws.shape == (20_000, D)
    torch.testing.assert_close(draws.abs().mean(0), scale, rtol=0.05, atol=0)  # E|z| = scale for a Laplace


def test_posteriors_are_scale_constrained_laplace_and_infer_is_their_mixture():
    model, batch = make_model(), make_batch()
    posteriors = model.encode(batch)
    for n in NAMES:
        loc, logits = model.encoders[n](batch.data[n])
        torch.testing.assert_close(posteriors[n].base_dist.loc, loc)
        torch.testing.assert_close(posteriors[n].base_dist.scale, torch.softmax(logits, -1) * D + 1e-6)
        single = model.infer(batch, [n])
        torch.testing.assert_close(single.base_dist.scale, posteriors[n].base_dist.scale)
    q = model.infer(batch, ["a", "c"])
    z = torch.randn(5, B, D)
    expected = torch.log((posteriors["a"].log_prob(z).exp() + posteriors["c"].log_prob(z).exp()) / 2)
    torch.testing.assert_close(q.log_prob(z), expected)
    assert q.sample((6,)).shape == (6, B, D)
    mask = {"c": torch.tensor([True, False, True])}
    q = model.infer(make_batch(mask=mask), ["a", "c"])
    torch.testing.assert_close(q.log_prob(z)[:, 1], posteriors["a"].log_prob(z)[:, 1])
    torch.testing.assert_close(q.log_prob(z)[:, 0], expected[:, 0])
    assert set(model.reconstruct(batch)) == set(NAMES)


@pytest.mark.parametrize("estimator,bound", VARIANTS)
def test_full_mask_equals_no_mask(estimator, bound):
    model = make_model()
    ones = {n: torch.ones(B, dtype=torch.bool) for n in NAMES}
    results = []
    for batch in (make_batch(), make_batch(mask=ones)):
        torch.manual_seed(4)
        loss = MMVAEObjective(K, estimator, bound)(model, batch, {}).loss
        results.append((loss, torch.autograd.grad(loss, list(model.parameters()))))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("estimator,bound", VARIANTS)
def test_a_missing_modality_leaves_the_mixture_the_likelihood_and_the_range_of_r(estimator, bound):
    """Sample b with x_c missing gets the objective of the model without c (c is drawn last, so the a and b
    draws are the same noise), whatever x_c holds; the other samples get the full objective."""
    observed = torch.tensor([True, False, True, False])
    batch = make_batch(mask={"c": observed}, n=4)
    batch.data["c"][~observed] = 1e3
    model, objective = make_model(), MMVAEObjective(K, estimator, bound)
    torch.manual_seed(5)
    masked, _ = objective.per_sample(model, batch)
    torch.manual_seed(5)
    full, _ = objective.per_sample(model, make_batch(n=4))
    torch.manual_seed(5)
    without_c, _ = objective.per_sample(model, batch.select(["a", "b"]))
    torch.testing.assert_close(masked[~observed], without_c[~observed])
    torch.testing.assert_close(masked[observed], full[observed])
    masked.mean().backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)


def test_every_modality_missing_is_rejected():
    mask = {n: torch.tensor([True, False, True]) for n in NAMES}
    with pytest.raises(ValueError, match="sample 1 has every modality"):
        MMVAEObjective(K)(make_model(), make_batch(mask=mask), {})


def test_bad_arguments_are_named():
    for k in (0, -1):
        with pytest.raises(ValueError, match=f"K={k}"):
            MMVAEObjective(k)
    with pytest.raises(ValueError, match="unknown estimator 'elbo'"):
        MMVAEObjective(estimator="elbo")
    with pytest.raises(ValueError, match="unknown bound 'loose'"):
        MMVAEObjective(bound="loose")
