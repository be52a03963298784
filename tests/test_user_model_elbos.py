"""pyromm's ELBOs on a Pyro model that is not in the package: closed forms on a linear-Gaussian model, Pyro's own
ELBOs as independent implementations, the trainer on pyro.params and pyro.optim, and the named errors."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO, RenyiELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from torch.distributions import constraints

from pyromm.data import MultimodalBatch, MultimodalDataset
from pyromm.infer import DReG, ELBOObjective, IWAE, RateELBO, RateModeError, SiteError
from pyromm.train import Trainer

D, X, N = 2, 3, 16
W = torch.tensor([[1.0, -0.5], [0.3, 0.8], [-0.7, 0.2]], dtype=torch.float64)
BIAS = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
SIGMA = 0.6


def model(batch, hyper=None):
    """z ~ N(0, I), x ~ N(W z + b, σ² I): log p(x) = log N(x; b, W Wᵀ + σ² I) in closed form."""
    x = batch.data["x"]
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], D, dtype=x.dtype), 1.0).to_event(1))
        pyro.sample("x_x", dist.Normal(z @ W.T + BIAS, SIGMA).to_event(1), obs=x)


def guide(batch, hyper=None):
    """q(z | x) = N(A x + c, diag s²), all three pyro.params (s positive)."""
    x = batch.data["x"]
    a = pyro.param("A", lambda: 0.1 * torch.ones(D, X, dtype=x.dtype))
    c = pyro.param("c", lambda: torch.zeros(D, dtype=x.dtype))
    s = pyro.param("s", lambda: torch.full((D,), 0.8, dtype=x.dtype), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x @ a.T + c, s).to_event(1))


def exact_log_evidence(x):
    cov = W @ W.T + SIGMA**2 * torch.eye(X, dtype=torch.float64)
    return dist.MultivariateNormal(BIAS, cov).log_prob(x)


def data(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, D, generator=g, dtype=torch.float64)
    return z @ W.T + BIAS + SIGMA * torch.randn(n, X, generator=g, dtype=torch.float64)


def batch(n=N, seed=0):
    return MultimodalBatch({"x": data(n, seed)})


@pytest.fixture(autouse=True)
def fresh_params():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def loss_and_grads(elbo, seed, model_fn=model, guide_fn=guide, b=None):
    b = batch() if b is None else b
    guide_fn(b)  # create the params
    params = [pyro.param(n).unconstrained() for n in ("A", "c", "s")]
    pyro.set_rng_seed(seed)
    loss = elbo.differentiable_loss(model_fn, guide_fn, b)
    return loss, torch.autograd.grad(loss, params)


def assert_same(first, second):
    torch.testing.assert_close(first[0], second[0])
    for a, b in zip(first[1], second[1]):
        torch.testing.assert_close(a, b)


def test_analytic_rate_equals_pyros_mean_field_elbo():
    assert_same(loss_and_grads(RateELBO("analytic"), 3), loss_and_grads(TraceMeanField_ELBO(), 3))


def test_mc_rate_equals_pyros_trace_elbo_and_iwae_with_one_particle():
    mc = loss_and_grads(RateELBO("mc"), 4)
    assert_same(mc, loss_and_grads(Trace_ELBO(), 4))
    assert_same(mc, loss_and_grads(IWAE(num_particles=1), 4))


def test_iwae_bound_rises_with_the_number_of_particles_towards_log_evidence():
    b = batch(64)
    guide(b)
    exact = exact_log_evidence(b.data["x"]).sum().item()
    means = {}
    with torch.no_grad():
        for k, seeds in ((1, 6), (10, 6), (1000, 2)):
            values = []
            for seed in range(seeds):
                pyro.set_rng_seed(seed)
                values.append(-IWAE(num_particles=k).loss(model, guide, b))
            means[k] = sum(values) / len(values)
    assert means[1] < means[10] < means[1000] <= exact + 0.5
    assert exact - means[1] > 5  # the guide is far from the posterior
    assert abs(means[1000] - exact) < 0.05 * (exact - means[1])


def test_dreg_gradient_matches_iwae_gradient_in_the_mean():
    b = MultimodalBatch({"x": data(8).repeat(20, 1)})
    draws = {}
    for name, elbo in (("iwae", IWAE(num_particles=10)), ("dreg", DReG(num_particles=10))):
        draws[name] = torch.stack([torch.cat([g.flatten() for g in loss_and_grads(elbo, s, b=b)[1]]) for s in range(20)])
    diff = draws["dreg"] - draws["iwae"]
    z_scores = diff.mean(0) / (diff.std(0) / math.sqrt(20) + 1e-12)
    assert z_scores.abs().max() < 5, z_scores
    assert draws["dreg"].var(0).sum() < draws["iwae"].var(0).sum()


def mixture_model(batch, hyper=None):
    """Model with a Pyro MixtureSameFamily prior of two Normal components."""
    x = batch.data["x"]
    locs = torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=x.dtype).expand(x.shape[0], 2, D)
    mixture = dist.MixtureSameFamily(
        dist.Categorical(torch.tensor([0.3, 0.7], dtype=x.dtype).expand(x.shape[0], 2)),
        dist.Normal(locs, 0.8).to_event(1),
    )
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", mixture)
        pyro.sample("x_x", dist.Normal(z @ W.T + BIAS, SIGMA).to_event(1), obs=x)


def test_jensen_rate_on_pyros_mixture_is_the_weighted_sum_of_component_kls():
    b = batch()
    guide(b)
    loss, terms = RateELBO("jensen").loss_and_terms(mixture_model, guide, b)
    q = dist.Normal(b.data["x"] @ pyro.param("A").T + pyro.param("c"), pyro.param("s")).to_event(1)
    expected = 0.0
    for weight, loc in ((0.3, [-1.0, 0.0]), (0.7, [1.0, 0.5])):
        p = dist.Normal(torch.tensor(loc, dtype=torch.float64), 0.8).to_event(1)
        expected = expected + weight * torch.distributions.kl_divergence(q, p)
    torch.testing.assert_close(terms["rate"], expected.sum().detach())


def test_the_trainer_optimises_pyro_params_and_leaves_them_in_the_param_store():
    train = MultimodalDataset({"x": data(64, 1).float()})
    pyro.clear_param_store()
    with torch.no_grad():
        before = float(-IWAE(1).loss(model_f32, guide, train.batch(slice(0, 64))))
    pyro.clear_param_store()
    holder = torch.nn.Linear(1, 1)  # a model without parameters of its own in the programs
    history = Trainer(
        _Programs(holder), RateELBO("analytic"), lr=0.05, batch_size=16, epochs=6, progress=False
    ).fit(train)
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    assert "A" in pyro.get_param_store() and not torch.allclose(pyro.param("A"), torch.full((D, X), 0.1))
    assert float(-IWAE(1).loss(model_f32, guide, train.batch(slice(0, 64)))) > before - 1e-3


def model_f32(batch, hyper=None):
    x = batch.data["x"]
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], D), 1.0).to_event(1))
        pyro.sample("x_x", dist.Normal(z @ W.T.float() + BIAS.float(), SIGMA).to_event(1), obs=x)


class _Programs(torch.nn.Module):
    """A module whose programs are the user's functions above (the trainer needs a module to hold)."""

    def __init__(self, holder):
        super().__init__()
        self.holder = holder

    def model(self, batch, hyper=None):
        model_f32(batch, hyper)

    def guide(self, batch, hyper=None):
        guide(batch, hyper)


@pytest.mark.parametrize(
    "optimizer",
    [pyro.optim.Adam({"lr": 0.05}), pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.05}, "gamma": 0.5})],
    ids=["adam", "scheduler"],
)
def test_pyro_optim_optimizers_and_schedulers_are_accepted(optimizer):
    train = MultimodalDataset({"x": data(32, 2).float()})
    trainer = Trainer(_Programs(torch.nn.Linear(1, 1)), RateELBO("analytic"), optimizer=optimizer, batch_size=16,
                      epochs=3, progress=False)
    history = trainer.fit(train)
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    if isinstance(optimizer, pyro.optim.lr_scheduler.PyroLRScheduler):
        lrs = [s.get_last_lr()[0] for s in trainer.optimizer.optim.optim_objs.values()]
        assert lrs and all(lr == pytest.approx(0.05 * 0.5**3) for lr in lrs)


@pytest.mark.parametrize("elbo", [TraceGraph_ELBO(), RenyiELBO(alpha=0.5, num_particles=2), JitTrace_ELBO()],
                         ids=["tracegraph", "renyi", "jit"])
def test_pyros_other_elbos_train_through_the_trainer(elbo):
    train = MultimodalDataset({"x": data(32, 3).float()})
    history = Trainer(_Programs(torch.nn.Linear(1, 1)), elbo, lr=0.05, batch_size=16, epochs=3, progress=False,
                      validate=False).fit(train)
    assert all(math.isfinite(row["train/loss"]) for row in history)
    assert history[-1]["train/loss"] < history[0]["train/loss"]


def test_trace_graph_elbo_gradients_are_those_of_trace_elbo_divided_by_the_batch_size():
    b = MultimodalBatch({"x": data(8).float()})
    programs = _Programs(torch.nn.Linear(1, 1))
    grads = {}
    for name, elbo in (("graph", TraceGraph_ELBO()), ("trace", Trace_ELBO())):
        pyro.clear_param_store()
        programs.guide(b)
        params = [pyro.param(n).unconstrained() for n in ("A", "c", "s")]
        pyro.set_rng_seed(0)

        out = ELBOObjective(elbo)(programs, b, {})
        if not out.gradients_done:
            out.loss.backward()
        grads[name] = [p.grad.clone() for p in params]
    for a, b_ in zip(grads["graph"], grads["trace"]):
        torch.testing.assert_close(a, b_)


def test_svi_runs_pyromms_elbo_on_the_user_model():
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=RateELBO("analytic"))
    b = batch()
    losses = [svi.step(b) for _ in range(30)]
    assert losses[-1] < losses[0]


# --- bad input -------------------------------------------------------------------------------------------------


def test_a_latent_model_site_without_a_guide_site_is_named():
    def lonely_guide(batch, hyper=None):
        pass

    with pytest.raises(SiteError, match="model site 'z' is latent but the guide has no site 'z'"):
        RateELBO().differentiable_loss(model, lonely_guide, batch())


def test_a_rate_mode_the_prior_cannot_give_names_the_mode_to_use():
    with pytest.raises(RateModeError, match=r"site 'z': no closed-form KL .* use rate='jensen' \(an upper bound\) or 'mc'"):
        loss_and_grads(RateELBO("analytic"), 0, model_fn=mixture_model)


@pytest.mark.parametrize("elbo", [IWAE(num_particles=3), DReG(num_particles=3), RateELBO()], ids=["iwae", "dreg", "rate"])
def test_reparameterised_estimators_refuse_a_guide_without_rsample(elbo):
    def coin_model(batch, hyper=None):
        with pyro.plate("data", N):
            pyro.sample("c", dist.Bernoulli(torch.full((N,), 0.5)))

    def coin_guide(batch, hyper=None):
        p = pyro.param("p", torch.full((N,), 0.3), constraint=constraints.unit_interval)
        with pyro.plate("data", N):
            pyro.sample("c", dist.Bernoulli(p))

    with pytest.raises(SiteError, match="guide site 'c' is a Bernoulli without rsample"):
        elbo.differentiable_loss(coin_model, coin_guide, batch())


def test_a_pyro_param_whose_constraint_no_optimiser_can_keep_is_named():
    class Counting(_Programs):
        def guide(self, batch, hyper=None):
            pyro.param("count", torch.tensor(3.0), constraint=constraints.nonnegative_integer)
            guide(batch, hyper)

    train = MultimodalDataset({"x": data(16).float()})
    trainer = Trainer(Counting(torch.nn.Linear(1, 1)), RateELBO(), batch_size=16, epochs=1, progress=False)
    with pytest.raises(ValueError, match="pyro.param 'count' has the constraint"):
        trainer.fit(train)


def test_a_mixture_prior_of_two_families_is_refused_for_the_jensen_rate():
    def mixed_model(batch, hyper=None):
        x = batch.data["x"]
        zeros = torch.zeros(x.shape[0], D, dtype=x.dtype)
        prior = dist.MaskedMixture(
            torch.zeros(x.shape[0], dtype=torch.bool), dist.Normal(zeros, 1.0).to_event(1), dist.Laplace(zeros, 1.0).to_event(1)
        )
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)
            pyro.sample("x_x", dist.Normal(z @ W.T + BIAS, SIGMA).to_event(1), obs=x)

    with pytest.raises(RateModeError, match="components of one family"):
        loss_and_grads(RateELBO("jensen"), 0, model_fn=mixed_model)


def test_the_trainer_passes_pyromms_named_errors_through_unchanged():
    class Mixed(_Programs):
        def model(self, batch, hyper=None):
            mixture_model(MultimodalBatch({"x": batch.data["x"].double()}), hyper)

        def guide(self, batch, hyper=None):
            guide(MultimodalBatch({"x": batch.data["x"].double()}), hyper)

    train = MultimodalDataset({"x": data(16).float()})
    trainer = Trainer(Mixed(torch.nn.Linear(1, 1)), RateELBO("analytic"), batch_size=16, epochs=1, progress=False)
    with pytest.raises(RateModeError, match=r"^site 'z': no closed-form KL .* use rate='jensen' \(an upper bound\) or 'mc'$"):
        trainer.fit(train)
