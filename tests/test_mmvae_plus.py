"""MMVAE+'s stratified Pyro programs under ``StratifiedIWAE``: against the bound written out with explicit loops
over samples b, sources r, draws k, targets d and mixture components m, and against the hand-written objective
of ``tests/oracles.py`` in loss and gradients; the DReG detach modes; the auxiliary private priors; missing
modalities; the inference contract; training through ``pyro.infer.SVI`` and the ``Trainer``."""
import itertools

import pyro
import pytest
import torch
import pyro.distributions as dist
from pyro import poutine
from torch import nn

from oracles import MMVAEPlusObjective
from pyromm.data import MultimodalBatch, MultimodalDataset
from pyromm.infer import StratifiedIWAE
from pyromm.likelihoods import Laplace
from pyromm.models import Modality
from pyromm.models.mmvae_plus import MMVAEPlus
from pyromm.nn import MLPDecoder, MLPEncoder
from pyromm.train import Trainer

S, P, DIM, B = 2, 3, 4, 3  # shared dim D_z, private dim D_w, data dim, batch size
NAMES = ("a", "b", "c")
WEIGHTS = {"a": 1.0, "b": 2.5, "c": 0.5}  # λ_d
PRIOR_LOGITS = {"a": [0.4, -0.3, 0.1], "b": [-0.2, 0.5, 0.0], "c": [0.3, 0.3, -0.6]}  # ℓ_w,m
VARIANTS = [("elbo", 1, "proper"), ("elbo", 1, "reference"), ("dreg", 3, "proper"), ("dreg", 3, "reference")]
MISSING = {"a": torch.tensor([True, True, False]), "c": torch.tensor([True, False, True])}


class LinearEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(DIM, 2 * (S + P))

    def forward(self, x):
        return self.net(x).chunk(2, -1)


def make_model(learn_private_prior=True, names=NAMES, dtype=torch.float32):
    torch.manual_seed(0)
    mods = [Modality(n, LinearEncoder(), nn.Linear(P + S, DIM), Laplace(1, 0.75), (DIM,), weight=WEIGHTS[n])
            for n in names]
    model = MMVAEPlus(mods, S, P, learn_private_prior=learn_private_prior).to(dtype)
    with torch.no_grad():
        for n in names:
            model.private_prior_logits[n].copy_(torch.tensor(PRIOR_LOGITS[n]))
    return model


def make_batch(names=NAMES, mask=None, n=B, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    data = {k: torch.randn(n, DIM, generator=g).to(dtype) for k in names}
    for k, observed in (mask or {}).items():
        data[k][~observed] = 1e3  # a missing modality's values must not matter
    return MultimodalBatch(data, mask=mask)


def laplace_log_density(x, loc, scale):
    return (-(x - loc).abs() / scale - torch.log(2 * scale)).sum(-1)


def reference_loss(model, batch, estimator, K, detach, beta, seed):
    """−1/B Σ_b objective_b of the MMVAE+ bound (``pyromm.models.mmvae_plus``), one scalar at a time, drawing the
    noise in the documented order. For DReG the path u ↦ w̃ u + (1 − w̃) stopgrad(u) carries w̃ on top of the
    surrogate's w̃ (the hook)."""
    names = list(batch.data)
    observed = {n: batch.observed(n) if batch.observed(n) is not None else torch.ones(B, dtype=torch.bool)
                for n in names}
    q = {}  # q[n] = (loc_z, scale_z, loc_w, scale_w): z is the first S encoder outputs, w the other P
    for n in names:
        loc, second = model.encoders[n](batch.data[n])
        scale_z = torch.softmax(second[:, :S], -1) * S + 1e-6
        scale_w = torch.softmax(second[:, S:], -1) * P + 1e-6
        q[n] = (loc[:, :S], scale_z, loc[:, S:], scale_w)
    torch.manual_seed(seed)
    z, w = {}, {}
    for n in names:
        z[n] = dist.Laplace(q[n][0], q[n][1]).rsample((K,))
        w[n] = dist.Laplace(q[n][2], q[n][3]).rsample((K,))
    w_cross = {}
    for r in names:
        for d in names:
            if d != r:
                scale = torch.softmax(model.private_prior_logits[d], -1) * P
                w_cross[r, d] = dist.Laplace(torch.zeros(P), scale).rsample((K, B))
    stop = estimator == "dreg" and detach == "proper"

    def params(n, b, i):
        return q[n][i][b].detach() if stop else q[n][i][b]

    def log_weight(b, r, k, u):
        present = [n for n in names if observed[n][b]]
        w_u, z_u = u[:P], u[P:]
        lpx = 0.0
        for d in present:
            u_d = u if d == r else torch.cat([w_cross[r, d][k, b], z_u])
            x_d = batch.data[d][b]
            lpx = lpx + WEIGHTS[d] * laplace_log_density(x_d, model.decoders[d](u_d), torch.tensor(0.75))
        lpu = laplace_log_density(u, torch.zeros(P + S), torch.ones(P + S))
        mixture = 0.0
        for m in present:
            mixture = mixture + torch.exp(laplace_log_density(z_u, params(m, b, 0), params(m, b, 1))) / len(present)
        lqw = laplace_log_density(w_u, params(r, b, 2), params(r, b, 3))
        return lpx + beta * (lpu - torch.log(mixture) - lqw)

    total = 0.0
    for b in range(B):
        sources = [r for r in names if observed[r][b]]
        objective = 0.0
        for r in sources:
            us = [torch.cat([w[r][k, b], z[r][k, b]]) for k in range(K)]
            values = torch.stack([log_weight(b, r, k, us[k]) for k in range(K)])
            if estimator == "elbo":
                objective = objective + torch.log(torch.exp(values).mean())
            else:
                weights = torch.softmax(values.detach(), 0)
                for k in range(K):
                    hooked = weights[k] * us[k] + (1 - weights[k]) * us[k].detach()
                    objective = objective + weights[k] * log_weight(b, r, k, hooked)
        total = total + objective / len(sources)
    return -total / B


def elbo_of(estimator, K, detach="proper"):
    """The ``StratifiedIWAE`` of the reference options: 'elbo' = (1, 'iwae'); 'dreg' with detach 'proper' or
    'reference' (log q at the live parameters)."""
    if estimator == "elbo":
        return StratifiedIWAE(K, "iwae")
    return StratifiedIWAE(K, "dreg", detach_guide=detach == "proper")


def loss_and_grads(model, batch, elbo, hyper, seed):
    """(loss / B, terms / B, {parameter name: gradient}) of ``elbo`` on the model's programs under ``seed``."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    torch.manual_seed(seed)
    loss, terms = elbo.loss_and_terms(model.model, model.guide, batch, hyper)
    loss, terms = loss / batch.batch_size, {k: v / batch.batch_size for k, v in terms.items()}
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return loss, terms, {n: g for (n, _), g in zip(named, grads)}


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("estimator,K,detach", VARIANTS)
def test_the_programs_give_the_reference_formula_with_its_gradients(estimator, K, detach, masked):
    model, batch = make_model(), make_batch(mask=MISSING if masked else None)
    loss, _, got = loss_and_grads(model, batch, elbo_of(estimator, K, detach), {"beta": 0.7}, seed=7)
    expected_loss = reference_loss(model, batch, estimator, K, detach, beta=0.7, seed=7)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    expected = torch.autograd.grad(expected_loss, [p for p in model.parameters() if p.requires_grad])
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-5)
    for name, e in zip(names, expected):
        torch.testing.assert_close(got[name], e, rtol=1e-4, atol=1e-5, msg=name)
    assert all(bool(torch.isfinite(g).all()) for g in got.values())


ORACLE_OPTIONS = [("elbo", 1, "proper"), ("dreg", 1, "proper"), ("dreg", 3, "proper"), ("dreg", 1, "reference"),
                  ("dreg", 3, "reference")]


@pytest.mark.parametrize("beta", [0.7, 0.0])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("estimator,K,detach", ORACLE_OPTIONS)
def test_the_programs_equal_the_hand_written_objective(estimator, K, detach, masked, beta):
    """Same draws, same loss and the same gradient for every parameter (float64), with and without missing
    modalities; β = 0 (a warm-up's start) leaves only the reconstructions."""
    model = make_model(dtype=torch.float64)
    batch = make_batch(mask=MISSING if masked else None, dtype=torch.float64)
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    torch.manual_seed(11)
    out = MMVAEPlusObjective(K, estimator, detach=detach)(model, batch, {"beta": beta})
    expected = torch.autograd.grad(out.loss, params)
    loss, terms, got = loss_and_grads(model, batch, elbo_of(estimator, K, detach), {"beta": beta}, seed=11)
    torch.testing.assert_close(loss, out.loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(terms["iwae"], out.terms["iwae"], rtol=1e-12, atol=1e-12)
    for name, e in zip(names, expected):
        torch.testing.assert_close(got[name], e, rtol=1e-10, atol=1e-12, msg=name)


def test_the_programs_hold_one_stratum_per_source():
    model, batch = make_model(), make_batch(mask=MISSING)
    guide = poutine.trace(model.guide).get_trace(batch, {"beta": 0.5})
    trace = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(batch, {"beta": 0.5})
    sites = {n: s for n, s in trace.nodes.items() if s["type"] == "sample" and n != "data"}
    latent = {f"{v}@{r}" for v in "zw" for r in NAMES}
    assert set(sites) == latent | {f"x_{d}@{r}" for r in NAMES for d in NAMES}
    assert {n for n, s in guide.nodes.items() if s["type"] == "sample" and n != "data"} == latent
    for trace_ in (guide, trace):
        for name in latent:
            assert trace_.nodes[name]["infer"]["stratum"] == name[2:] and trace_.nodes[name]["scale"] == 0.5
    assert all(s["infer"]["stratum"] == n.split("@")[1] for n, s in sites.items())
    assert sites["x_b@a"]["scale"] == WEIGHTS["b"]
    torch.testing.assert_close(sites["x_c@a"]["mask"], MISSING["a"] & MISSING["c"])
    z = guide.nodes["z@c"]["value"]
    torch.testing.assert_close(guide.nodes["z@c"]["fn"].log_prob(z), model.joint(batch).log_prob(z))


def test_the_hyper_beta_scales_the_rate_terms():
    model, batch = make_model(), make_batch()
    loss, _, _ = loss_and_grads(model, batch, elbo_of("dreg", 3), {"beta": 2.0}, seed=2)
    torch.testing.assert_close(loss, reference_loss(model, batch, "dreg", 3, "proper", beta=2.0, seed=2))


def test_detach_modes_share_the_loss_but_not_the_encoder_gradients():
    model, batch = make_model(), make_batch()
    results = {mode: loss_and_grads(model, batch, elbo_of("dreg", 3, mode), {}, seed=3)
               for mode in ("proper", "reference")}
    (proper, t_proper, g_proper), (reference, t_reference, g_reference) = results["proper"], results["reference"]
    torch.testing.assert_close(proper, reference)
    torch.testing.assert_close(t_proper["iwae"], t_reference["iwae"])
    for name in g_proper:
        if name.startswith("encoders."):
            assert not torch.allclose(g_proper[name], g_reference[name], atol=1e-6), name  # the score term
        else:  # decoders and private priors: log q has no part in their gradients
            torch.testing.assert_close(g_proper[name], g_reference[name], msg=name)


@pytest.mark.parametrize("estimator,K", [("elbo", 1), ("dreg", 3)])
def test_full_mask_equals_no_mask(estimator, K):
    model = make_model()
    ones = {n: torch.ones(B, dtype=torch.bool) for n in NAMES}
    (a, _, ga), (b, _, gb) = (loss_and_grads(model, batch, elbo_of(estimator, K), {}, seed=4)
                              for batch in (make_batch(), make_batch(mask=ones)))
    torch.testing.assert_close(a, b)
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], msg=name)


@pytest.mark.parametrize("learn,names", [(True, NAMES), (True, ("a",)), (False, NAMES)])
def test_private_priors_learn_only_through_cross_reconstruction(learn, names):
    model = make_model(learn, names)
    assert all(p.requires_grad == learn for p in model.private_prior_logits.values())
    torch.testing.assert_close(model.private_prior(names[0]).base_dist.scale,
                               torch.softmax(torch.tensor(PRIOR_LOGITS[names[0]]), 0) * P)

    def backward():
        torch.manual_seed(0)
        elbo_of("dreg", 3).differentiable_loss(model.model, model.guide, make_batch(names), {}).backward()

    backward()
    grads = [model.private_prior_logits[n].grad for n in names]
    if learn and len(names) > 1:  # r_d supplies the private latent of every r → d cross-reconstruction
        assert all(g is not None and g.abs().sum() > 0 for g in grads)
        model.zero_grad()
        with torch.no_grad():  # decoders that ignore w: the cross-reconstructions no longer depend on r_d
            for d in names:
                model.decoders[d].weight[:, :P] = 0.0
        backward()
        assert all(torch.equal(model.private_prior_logits[n].grad, torch.zeros(P)) for n in names)
    else:  # no cross-reconstruction with one modality; frozen logits without learn_private_prior
        assert all(g is None for g in grads)


def test_encoder_split_and_scale_constraint_per_block():
    model, batch = make_model(), make_batch()
    parts, shared = model.encode_parts(batch), model.encode(batch)
    for n in NAMES:
        loc, second = model.encoders[n](batch.data[n])
        q_z, q_w = parts[n]
        torch.testing.assert_close(shared[n].mean, loc[:, :S])  # the representation is the shared mean
        torch.testing.assert_close(q_z.base_dist.scale, torch.softmax(second[:, :S], -1) * S + 1e-6)
        torch.testing.assert_close(q_w.base_dist.loc, loc[:, S:])
        torch.testing.assert_close(q_w.base_dist.scale, torch.softmax(second[:, S:], -1) * P + 1e-6)
    model.check_batch(batch)


def test_infer_and_decode_for_every_subset():
    model, batch = make_model(), make_batch()
    posteriors = model.encode(batch)
    z = torch.randn(5, B, S)
    for subset in [list(c) for size in (1, 2, 3) for c in itertools.combinations(NAMES, size)]:
        q = model.infer(batch, subset)
        expected = torch.stack([posteriors[m].log_prob(z) for m in subset]).exp().mean(0).log()
        torch.testing.assert_close(q.log_prob(z), expected)  # the mixture of the subset's shared posteriors
        sample = q.sample((4,))
        assert sample.shape == (4, B, S)
        for target in NAMES:
            decoded = model.decode(target, sample)
            assert decoded.batch_shape == (4, B) and decoded.mean.shape == (4, B, DIM)
    q = model.infer(make_batch(mask=MISSING), ["a", "c"])  # sample 1 misses c, sample 2 misses a
    expected = torch.stack([posteriors[m].log_prob(z) for m in ("a", "c")]).exp().mean(0).log()
    torch.testing.assert_close(q.log_prob(z)[:, 0], expected[:, 0])
    torch.testing.assert_close(q.log_prob(z)[:, 1], posteriors["a"].log_prob(z)[:, 1])
    torch.testing.assert_close(q.log_prob(z)[:, 2], posteriors["c"].log_prob(z)[:, 2])
    assert model.prior(batch).batch_shape == (B,) and model.prior(batch).event_shape == (S,)
    draws = model.sample_prior(7)
    assert draws.shape == (7, S)
    assert all(model.decode(n, draws).mean.shape == (7, DIM) for n in NAMES)
    recon = model.reconstruct(batch)
    assert set(recon) == set(NAMES) and all(recon[n].mean.shape == (B, DIM) for n in NAMES)
    with pytest.raises(ValueError, match=r"size 2 \(shared\) or 5"):
        model.decode("a", torch.zeros(B, 4))


def test_decode_completes_a_shared_latent_with_unit_laplace_private_draws():
    """Decoder a outputs its first P inputs (w), so decoding a shared z shows the private draws: Laplace(0, 1)
    (E|w| = 1), not the learnt r_a; a full u = [w, z] is decoded as given."""
    model = make_model()
    with torch.no_grad():
        model.decoders["a"].weight.zero_()
        model.decoders["a"].bias.zero_()
        model.decoders["a"].weight[:P, :P] = torch.eye(P)
    torch.manual_seed(0)
    w = model.decode("a", torch.zeros(20_000, S)).mean[:, :P]
    torch.testing.assert_close(w.abs().mean(0), torch.ones(P), rtol=0.05, atol=0)
    torch.testing.assert_close(w.mean(0), torch.zeros(P), rtol=0, atol=0.05)
    u = torch.randn(6, B, P + S)
    torch.testing.assert_close(model.decode("a", u).mean[..., :P], u[..., :P])


def test_svi_trains_the_programs_and_its_loss_is_the_trainers_times_the_batch_size():
    model, batch = make_model(), make_batch(mask=MISSING)
    elbo, hyper = elbo_of("dreg", 3), {"beta": 0.7}
    torch.manual_seed(6)
    trainer_loss = Trainer(model, elbo, progress=False).objective(model, batch, hyper).loss.detach()
    pyro.clear_param_store()
    svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-3}), loss=elbo)
    before = model.private_prior_logits["b"].detach().clone()
    torch.manual_seed(6)
    losses = [svi.step(batch, hyper) for _ in range(3)]
    assert losses[0] == pytest.approx(float(trainer_loss) * B, rel=1e-6)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(model.private_prior_logits["b"], before)


def test_a_short_training_run_decreases_the_loss():
    g = torch.Generator().manual_seed(0)
    n = 128
    shared = torch.randn(n, 2, generator=g)
    data = {m: shared @ torch.randn(2, 6, generator=g) + 0.3 * torch.randn(n, 6, generator=g) for m in ("x", "y")}
    torch.manual_seed(0)
    mods = [Modality(m, MLPEncoder(6, S + P, hidden=(32,)), MLPDecoder(P + S, 6, hidden=(32,)), Laplace(1, 0.75), (6,))
            for m in data]
    model = MMVAEPlus(mods, S, P)
    trainer = Trainer(model, elbo_of("dreg", 2), batch_size=32, epochs=5, lr=1e-2, progress=False)
    history = trainer.fit(MultimodalDataset(data))
    losses = [row["train/loss"] for row in history]
    assert losses[-1] < losses[0] - 1.0, losses
    assert model.config()["shared_dim"] == S and model.config()["private_dim"] == P


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="shared_dim and private_dim"):
        MMVAEPlus(make_model().modalities.values(), S, 0)
    mask = {n: torch.tensor([True, False, True]) for n in NAMES}
    with pytest.raises(ValueError, match="sample 1 has every modality"):
        elbo_of("elbo", 1).differentiable_loss(make_model().model, make_model().guide, make_batch(mask=mask), {})
