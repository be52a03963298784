"""MMVAE's stratified Pyro programs under ``StratifiedIWAE``: against the bound written out with explicit loops
over samples b, modalities r, draws k and mixture components m, and against the hand-written objective of
``tests/oracles.py`` in loss and gradients; the learnable prior scale; the Laplace mixture posterior; missing
modalities; training through ``pyro.infer.SVI`` and the ``Trainer``."""
import itertools

import pyro
import pytest
import torch
import pyro.distributions as dist
from pyro import poutine
from torch import nn

from oracles import MMVAEObjective
from pyromm.data import MultimodalBatch
from pyromm.distributions import MixtureStratum
from pyromm.infer import StratifiedIWAE
from pyromm.likelihoods import Laplace
from pyromm.models import Modality
from pyromm.models.mmvae import MMVAE
from pyromm.train import Trainer

D, DIM, B, K = 2, 4, 3, 4
NAMES = ("a", "b", "c")
WEIGHTS = {"a": 1.0, "b": 2.5, "c": 0.5}  # λ_d
VARIANTS = list(itertools.product(("dreg", "iwae"), ("looser", "tight")))
MISSING = {"a": torch.tensor([True, True, False]), "c": torch.tensor([True, False, True])}


class LinearEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(DIM, 2 * D)

    def forward(self, x):
        return self.net(x).chunk(2, -1)


def make_model(learn_prior=True, names=NAMES, dtype=torch.float32):
    torch.manual_seed(0)
    mods = [Modality(n, LinearEncoder(), nn.Linear(D, DIM), Laplace(1, 0.75), (DIM,), weight=WEIGHTS[n])
            for n in names]
    model = MMVAE(mods, D, learn_prior=learn_prior).to(dtype)
    with torch.no_grad():
        model.prior_logits.copy_(torch.tensor([0.4, -0.3]))
    return model


def make_batch(names=NAMES, mask=None, n=B, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    data = {k: torch.randn(n, DIM, generator=g).to(dtype) for k in names}
    for k, observed in (mask or {}).items():
        data[k][~observed] = 1e3  # a missing modality's values must not matter
    return MultimodalBatch(data, mask=mask)


def stratified_loss(model, batch, elbo, seed, hyper=None):
    """(loss / B, terms / B) of ``elbo`` on the model's programs under ``seed``."""
    torch.manual_seed(seed)
    loss, terms = elbo.loss_and_terms(model.model, model.guide, batch, {} if hyper is None else hyper)
    return loss / batch.batch_size, {k: v / batch.batch_size for k, v in terms.items()}


def trainable(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def laplace_log_density(x, loc, scale):
    return (-(x - loc).abs() / scale - torch.log(2 * scale)).sum(-1)


def reference_loss(model, batch, estimator, bound, seed):
    """−1/B Σ_b objective_b of the MMVAE bound (``pyromm.models.mmvae``), one scalar at a time. For DReG the path
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
def test_the_programs_give_the_reference_formula_with_its_gradients(estimator, bound):
    model, batch = make_model(), make_batch()
    names, params = zip(*trainable(model))
    loss, _ = stratified_loss(model, batch, StratifiedIWAE(K, estimator, bound), seed=7)
    got = torch.autograd.grad(loss, params)
    expected_loss = reference_loss(model, batch, estimator, bound, seed=7)
    expected = torch.autograd.grad(expected_loss, params)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-5)
    for name, g, e in zip(names, got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("num_particles", [1, 3])
@pytest.mark.parametrize("estimator,bound", VARIANTS)
def test_the_programs_equal_the_hand_written_objective(estimator, bound, num_particles, masked):
    """Same draws, same loss and the same gradient for every parameter (float64), with and without missing
    modalities (sample 1 misses c, sample 2 misses a)."""
    model = make_model(dtype=torch.float64)
    batch = make_batch(mask=MISSING if masked else None, dtype=torch.float64)
    names, params = zip(*trainable(model))
    torch.manual_seed(11)
    out = MMVAEObjective(num_particles, estimator, bound)(model, batch, {})
    expected = torch.autograd.grad(out.loss, params)
    loss, terms = stratified_loss(model, batch, StratifiedIWAE(num_particles, estimator, bound), seed=11)
    got = torch.autograd.grad(loss, params)
    torch.testing.assert_close(loss, out.loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(terms["iwae"], out.terms["iwae"], rtol=1e-12, atol=1e-12)
    for name, g, e in zip(names, got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12, msg=name)


def test_the_programs_hold_one_stratum_per_source():
    model, batch = make_model(), make_batch(mask=MISSING)
    guide = poutine.trace(model.guide).get_trace(batch, {})
    trace = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(batch, {})
    sites = {n: s for n, s in trace.nodes.items() if s["type"] == "sample" and n != "data"}
    expected = {f"z@{r}" for r in NAMES} | {f"x_{d}@{r}" for r in NAMES for d in NAMES}
    assert set(sites) == expected
    assert all(s["infer"]["stratum"] == n.split("@")[1] for n, s in sites.items())
    assert sites["x_b@a"]["scale"] == WEIGHTS["b"]
    torch.testing.assert_close(sites["x_c@a"]["mask"], MISSING["a"] & MISSING["c"])
    q = guide.nodes["z@c"]["fn"]
    assert isinstance(q, MixtureStratum) and q.has_rsample
    torch.testing.assert_close(guide.nodes["z@c"]["mask"], MISSING["c"])
    z = guide.nodes["z@c"]["value"]
    torch.testing.assert_close(q.log_prob(z), model.joint(batch).log_prob(z))


def test_dreg_and_iwae_report_the_same_bound_and_tight_is_above_looser():
    model, batch = make_model(), make_batch()
    bounds = {}
    for estimator, bound in VARIANTS:
        loss, terms = stratified_loss(model, batch, StratifiedIWAE(K, estimator, bound), seed=3)
        bounds[estimator, bound] = terms["iwae"]
        if estimator == "iwae":
            torch.testing.assert_close(terms["iwae"], -loss.detach())
    for bound in ("looser", "tight"):
        torch.testing.assert_close(bounds["dreg", bound], bounds["iwae", bound])
    assert bounds["iwae", "tight"] >= bounds["iwae", "looser"]  # log-mean-exp of a pool ≥ mean of per-r ones


@pytest.mark.parametrize("learn_prior", [True, False])
def test_prior_scale_is_learnable_only_with_learn_prior(learn_prior):
    model = MMVAE(make_model().modalities.values(), D, learn_prior=learn_prior)
    batch = make_batch()
    torch.testing.assert_close(model.prior(batch).base_dist.scale, torch.ones(B, D))  # ℓ_p = 0: unit scales
    assert model.prior_logits.requires_grad == learn_prior
    stratified_loss(model, batch, StratifiedIWAE(K), seed=0)[0].backward()
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
        loss, _ = stratified_loss(model, batch, StratifiedIWAE(K, estimator, bound), seed=4)
        results.append((loss, torch.autograd.grad(loss, list(model.parameters()))))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("estimator,bound", VARIANTS)
def test_a_missing_modality_leaves_the_mixture_the_likelihood_and_the_range_of_r(estimator, bound):
    """A sample with x_c missing gets the objective of the model without c (c is drawn last, so the a and b
    draws are the same noise), whatever x_c holds; a sample observing c gets the full objective."""
    observed = torch.tensor([True, False])
    batch = make_batch(mask={"c": observed}, n=2)
    model, elbo = make_model(), StratifiedIWAE(K, estimator, bound)
    for b, reference in ((0, make_batch(n=2)), (1, batch.select(["a", "b"]))):
        one = lambda x: MultimodalBatch({n: v[b:b + 1] for n, v in x.data.items()},  # noqa: E731
                                        None if x.mask is None else {n: m[b:b + 1] for n, m in x.mask.items()})
        masked, _ = stratified_loss(model, one(batch), elbo, seed=5)
        expected, _ = stratified_loss(model, one(reference), elbo, seed=5)
        torch.testing.assert_close(masked, expected)
    loss, _ = stratified_loss(model, batch, elbo, seed=5)
    loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)


def test_every_modality_missing_is_rejected():
    mask = {n: torch.tensor([True, False, True]) for n in NAMES}
    with pytest.raises(ValueError, match="sample 1 has every modality"):
        stratified_loss(make_model(), make_batch(mask=mask), StratifiedIWAE(K), seed=0)


def test_svi_trains_the_programs_and_its_loss_is_the_trainers_times_the_batch_size():
    model, batch = make_model(), make_batch(mask=MISSING)
    elbo = StratifiedIWAE(3, "dreg", "looser")
    torch.manual_seed(6)
    trainer_loss = Trainer(model, elbo, progress=False).objective(model, batch, {}).loss.detach()
    pyro.clear_param_store()
    svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-3}), loss=elbo)
    before = model.decoders["a"].weight.detach().clone()
    torch.manual_seed(6)
    losses = [svi.step(batch, {}) for _ in range(3)]
    assert losses[0] == pytest.approx(float(trainer_loss) * B, rel=1e-6)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(model.decoders["a"].weight, before)


def test_bad_arguments_are_named():
    for k in (0, -1):
        with pytest.raises(ValueError, match=f"num_particles={k}"):
            StratifiedIWAE(k)
    with pytest.raises(ValueError, match="unknown estimator 'elbo'"):
        StratifiedIWAE(estimator="elbo")
    with pytest.raises(ValueError, match="unknown bound 'loose'"):
        StratifiedIWAE(bound="loose")
