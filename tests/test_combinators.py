"""Guide combinators over unimodal guide programs, a user's flow guide included: the joint guide samples the
aggregate of the distributions the unimodal guides give, and trains with pyromm's ELBOs."""
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.transforms import AffineTransform

from pyromm import aggregation, combinators
from pyromm.data import MultimodalBatch
from pyromm.distributions import ExpertMixture
from pyromm.infer import IWAE, RateELBO

B, D = 6, 2


def gaussian_guide(shift):
    def guide(batch, hyper=None):
        loc = pyro.param(f"loc_{shift}", lambda: torch.full((B, D), float(shift)))
        with pyro.plate("data", B):
            pyro.sample("z", dist.Normal(loc, 0.5 + 0.1 * shift).to_event(1))

    return guide


def flow_guide(batch, hyper=None):
    """A user's flow guide: z = a·u + b, u ~ N(0, I), with a learnt a and b."""
    a = pyro.param("a", lambda: torch.full((D,), 2.0), constraint=dist.constraints.positive)
    b = pyro.param("b", lambda: torch.zeros(D))
    base = dist.Normal(torch.zeros(B, D), 1.0).to_event(1)
    with pyro.plate("data", B):
        pyro.sample("z", dist.TransformedDistribution(base, [AffineTransform(b, a, event_dim=1)]))


def model(batch, hyper=None):
    with pyro.plate("data", B):
        z = pyro.sample("z", dist.Normal(torch.zeros(B, D), 1.0).to_event(1))
        pyro.sample("x_a", dist.Normal(z, 1.0).to_event(1), obs=batch.data["a"])


BATCH = MultimodalBatch({"a": torch.randn(B, D), "b": torch.randn(B, D)})


@pytest.fixture(autouse=True)
def fresh():
    pyro.clear_param_store()


def experts_of(guides):
    return {name: combinators.CombinedGuide(aggregation.average, {name: g}, gaussian_experts=False).experts(BATCH)[name] for name, g in guides.items()}


@pytest.mark.parametrize("combine, aggregate", [
    (combinators.product_of_experts, aggregation.product_of_experts),
    (combinators.average, aggregation.average),
])
def test_gaussian_combinators_sample_the_aggregate_of_the_unimodal_guides(combine, aggregate):
    guides = {"a": gaussian_guide(1), "b": gaussian_guide(2)}
    trace = pyro.poutine.trace(combine(guides)).get_trace(BATCH)
    q = trace.nodes["z"]["fn"]
    expected = aggregate(experts_of(guides))
    torch.testing.assert_close(q.base_dist.loc, expected.base_dist.loc)
    torch.testing.assert_close(q.base_dist.scale, expected.base_dist.scale)
    assert {"loc_1", "loc_2"} <= {n for n, s in trace.nodes.items() if s["type"] == "param"}
    assert [n for n, s in trace.nodes.items() if s["type"] == "sample"] == ["data", "z"]


def test_mixture_of_experts_of_a_flow_and_a_gaussian_has_the_mixture_density_and_trains():
    guides = {"a": flow_guide, "b": gaussian_guide(1)}
    joint = combinators.mixture_of_experts(guides)
    q = pyro.poutine.trace(joint).get_trace(BATCH).nodes["z"]["fn"]
    assert isinstance(q, ExpertMixture)
    z = torch.randn(B, D)
    experts = experts_of(guides)
    expected = torch.logsumexp(torch.stack([experts["a"].log_prob(z), experts["b"].log_prob(z)]), 0) - torch.log(torch.tensor(2.0))
    torch.testing.assert_close(q.log_prob(z), expected)
    svi = pyro.infer.SVI(model, joint, pyro.optim.Adam({"lr": 0.05}), loss=IWAE(num_particles=4))
    a0 = pyro.param("a").detach().clone() if "a" in pyro.get_param_store() else None
    losses = [svi.step(BATCH) for _ in range(20)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert a0 is None or not torch.equal(a0, pyro.param("a"))


def test_expert_mixture_draws_blocks_of_positions_from_each_observed_expert():
    experts = [dist.Normal(torch.full((B, D), float(k * 10)), 1e-4).to_event(1) for k in range(3)]
    observed = torch.ones(B, 3, dtype=torch.bool)
    observed[0, 0] = False
    mixture = ExpertMixture(experts, observed)
    assert mixture.component_index().tolist() == [1, 0, 1, 1, 2, 2]  # sample 0 observes experts 1 and 2
    z = mixture.rsample()
    torch.testing.assert_close(z[:, 0].round(), torch.tensor([10.0, 0, 10, 10, 20, 20]))


@pytest.mark.parametrize("batch", [1, 7, 128, 1000])
def test_expert_mixture_blocks_are_exact_quantiles_of_the_batch_position(batch):
    g = torch.Generator().manual_seed(batch)
    observed = torch.rand(batch, 4, generator=g) < 0.6
    observed[:, 2] = True
    experts = [dist.Normal(torch.zeros(batch, D), 1.0).to_event(1) for _ in range(4)]
    index = ExpertMixture(experts, observed).component_index()
    for b in range(batch):
        count = int(observed[b].sum())
        rank = ((2 * b + 1) * count) // (2 * batch)  # ⌊(b + ½)·|O_b| / B⌋ in exact rational arithmetic
        assert index[b] == observed[b].nonzero()[rank, 0], b


def test_expert_mixture_is_a_valid_distribution_under_pyro_validation(recwarn):
    experts = [dist.Normal(torch.zeros(B, D), 1.0).to_event(1), dist.Laplace(torch.ones(B, D), 2.0).to_event(1)]
    with pyro.validation_enabled(True):
        mixture = ExpertMixture(experts)
        assert repr(mixture.support) == repr(experts[0].support) and mixture.support.event_dim == 1
        assert torch.isfinite(mixture.log_prob(mixture.sample())).all()
        with pytest.raises(ValueError, match="support"):
            mixture.log_prob(torch.full((B, D), float("nan")))
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)], [str(w.message) for w in recwarn]


def test_a_non_gaussian_expert_is_refused_by_the_product_naming_the_modality():
    with pytest.raises(TypeError, match="expert of modality 'a' at site 'z' is TransformedDistribution"):
        pyro.poutine.trace(combinators.product_of_experts({"a": flow_guide})).get_trace(BATCH)


def test_a_guide_without_the_site_is_named():
    def silent(batch, hyper=None):
        pass

    with pytest.raises(KeyError, match="modality 'a' samples no site 'z'"):
        combinators.average({"a": silent})(BATCH)


def test_the_combined_guide_trains_with_rate_elbo_in_svi():
    guides = {"a": gaussian_guide(1), "b": gaussian_guide(2)}
    svi = pyro.infer.SVI(model, combinators.product_of_experts(guides), pyro.optim.Adam({"lr": 0.1}), loss=RateELBO())
    losses = [svi.step(BATCH) for _ in range(40)]
    assert losses[-1] < losses[0]
