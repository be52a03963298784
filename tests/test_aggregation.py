"""Guide combinators of pyromm.aggregation checked against independent hand computations."""
from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyromm.aggregation import (
    StratifiedMixture,
    average,
    mixture_of_experts,
    mixture_of_products,
    product_of_experts,
    subsets,
)

AGGREGATORS = [average, product_of_experts, mixture_of_experts, mixture_of_products]


def make_posteriors(b: int = 5, d: int = 3, names: str = "abc", seed: int = 0, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    params = {
        n: (
            torch.randn(b, d, generator=g, dtype=torch.float64).mul(2.0).requires_grad_(requires_grad),
            (torch.rand(b, d, generator=g, dtype=torch.float64) * 1.5 + 0.2).requires_grad_(requires_grad),
        )
        for n in names
    }
    return params, {n: dist.Normal(loc, scale).to_event(1) for n, (loc, scale) in params.items()}


def normal_log_density(z, loc, scale):
    """log N(z; loc, diag scale²) of one sample written out by hand (lists of floats)."""
    return sum(-0.5 * ((zi - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi) for zi, m, s in zip(z, loc, scale))


def product_by_formula(experts, with_prior):
    """PoE of one sample's experts [(loc, scale) lists] by the plain precision formula, per dimension."""
    d = len(experts[0][0])
    locs, scales = [], []
    for i in range(d):
        precisions = [1.0 / s[i] ** 2 for _, s in experts] + ([1.0] if with_prior else [])
        weighted = [m[i] / s[i] ** 2 for m, s in experts]
        var = 1.0 / sum(precisions)
        locs.append(var * sum(weighted))
        scales.append(math.sqrt(var))
    return locs, scales


def sample_experts(params, b, names):
    return [(params[n][0][b].tolist(), params[n][1][b].tolist()) for n in names]


# --------------------------------------------------------------------------------------------- subsets


def test_subsets_itertools_order():
    assert subsets(["a", "b", "c"]) == [
        ("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"), ("a", "b", "c")
    ]
    assert len(subsets([str(i) for i in range(5)])) == 31


@pytest.mark.parametrize("names, message", [([], "no modality"), (["a", "a"], "duplicate")])
def test_subsets_errors(names, message):
    with pytest.raises(ValueError, match=message):
        subsets(names)


# --------------------------------------------------------------------------------------------- PoE / AVG


@pytest.mark.parametrize("prior_expert", [False, True])
def test_poe_matches_product_of_densities_on_grid(prior_expert):
    params, posteriors = make_posteriors(b=4, d=1)
    q = product_of_experts(posteriors, prior_expert=prior_expert)
    grid = torch.linspace(-12, 12, 24001, dtype=torch.float64)
    for b in range(4):
        log_density = sum(
            torch.distributions.Normal(loc[b, 0], scale[b, 0]).log_prob(grid) for loc, scale in params.values()
        )
        if prior_expert:
            log_density = log_density + torch.distributions.Normal(0.0, 1.0).log_prob(grid)
        w = torch.softmax(log_density, 0)
        mean = (w * grid).sum()
        var = (w * (grid - mean) ** 2).sum()
        assert torch.allclose(q.base_dist.loc[b, 0], mean, atol=1e-6)
        assert torch.allclose(q.base_dist.scale[b, 0] ** 2, var, rtol=1e-5)


@pytest.mark.parametrize("prior_expert", [False, True])
def test_poe_matches_normalised_product_formula(prior_expert):
    params, posteriors = make_posteriors(b=5, d=3)
    q = product_of_experts(posteriors, prior_expert=prior_expert)
    for b in range(5):
        loc, scale = product_by_formula(sample_experts(params, b, "abc"), prior_expert)
        assert torch.allclose(q.base_dist.loc[b], torch.tensor(loc, dtype=torch.float64))
        assert torch.allclose(q.base_dist.scale[b], torch.tensor(scale, dtype=torch.float64))
    # ∏_m q_m(z) (· N(z; 0, I)) / q(z) does not depend on z.
    z = torch.randn(10, 5, 3, dtype=torch.float64)
    log_ratio = sum(p.log_prob(z) for p in posteriors.values()) - q.log_prob(z)
    if prior_expert:
        log_ratio = log_ratio + dist.Normal(0.0, 1.0).expand([3]).to_event(1).log_prob(z)
    assert torch.allclose(log_ratio, log_ratio[:1].expand_as(log_ratio))


def test_poe_is_stable_for_extreme_variances():
    loc = torch.tensor([[1.0, -2.0]])
    posteriors = {
        "sharp": dist.Normal(loc, torch.full((1, 2), math.exp(-50.0))).to_event(1),
        "flat": dist.Normal(-loc, torch.full((1, 2), math.exp(50.0))).to_event(1),
    }
    q = product_of_experts(posteriors)  # float32 precisions e^100 would overflow
    assert torch.isfinite(q.base_dist.loc).all() and torch.isfinite(q.base_dist.scale).all()
    assert torch.allclose(q.base_dist.loc, loc)
    assert torch.allclose(q.base_dist.scale.log(), torch.full((1, 2), -50.0))


def test_average_formula():
    params, posteriors = make_posteriors()
    q = average(posteriors)
    locs = torch.stack([loc for loc, _ in params.values()])
    scales = torch.stack([scale for _, scale in params.values()])
    assert torch.allclose(q.base_dist.loc, locs.sum(0) / 3)
    assert torch.allclose(q.base_dist.scale ** 2, (scales ** 2).sum(0) / 3)
    assert q.batch_shape == (5,) and q.event_shape == (3,)


# --------------------------------------------------------------------------------------------- mixtures


def test_moe_log_prob_is_the_explicit_mixture():
    params, posteriors = make_posteriors()
    q = mixture_of_experts(posteriors)
    assert isinstance(q, StratifiedMixture) and q.has_rsample
    z = q.rsample((2,))
    log_prob = q.log_prob(z)
    for s in range(2):
        for b in range(5):
            density = sum(
                math.exp(normal_log_density(z[s, b].tolist(), loc, scale)) / 3
                for loc, scale in sample_experts(params, b, "abc")
            )
            assert log_prob[s, b].item() == pytest.approx(math.log(density), rel=1e-9)


@pytest.mark.parametrize("prior_expert", ["full", "none", "all"])
def test_mopoe_log_prob_is_the_explicit_mixture(prior_expert):
    params, posteriors = make_posteriors()
    q = mixture_of_products(posteriors, prior_expert=prior_expert)
    assert q.num_components == 7
    z = q.rsample()
    log_prob = q.log_prob(z)
    family = [("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"), ("a", "b", "c")]
    for b in range(5):
        density = 0.0
        for subset in family:
            with_prior = prior_expert == "all" or (prior_expert == "full" and len(subset) == 3)
            loc, scale = product_by_formula(sample_experts(params, b, subset), with_prior)
            density += math.exp(normal_log_density(z[b].tolist(), loc, scale)) / len(family)
        assert log_prob[b].item() == pytest.approx(math.log(density), rel=1e-9)


@pytest.mark.parametrize("prior_expert", ["full", "none", "all"])
def test_masked_mopoe_log_prob_is_the_explicit_mixture(prior_expert):
    params, posteriors = make_posteriors(b=4)
    mask = {
        "a": torch.tensor([True, False, True, False]),
        "b": torch.tensor([True, True, False, False]),
        "c": torch.tensor([True, True, True, True]),
    }
    q = mixture_of_products(posteriors, mask, prior_expert=prior_expert)
    z = torch.randn(4, 3, dtype=torch.float64)
    log_prob = q.log_prob(z)
    for b in range(4):
        observed = [n for n in "abc" if mask[n][b]]
        # subsets with at least one observed member; each a PoE of its observed members only
        family = [s for s in subsets("abc") if any(n in observed for n in s)]
        density = 0.0
        for subset in family:
            members = [n for n in subset if n in observed]
            with_prior = prior_expert == "all" or (prior_expert == "full" and len(subset) == 3)
            loc, scale = product_by_formula(sample_experts(params, b, members), with_prior)
            density += math.exp(normal_log_density(z[b].tolist(), loc, scale)) / len(family)
        assert log_prob[b].item() == pytest.approx(math.log(density), rel=1e-9)


@pytest.mark.parametrize("aggregate", [mixture_of_experts, mixture_of_products])
@pytest.mark.parametrize("stratified", [True, False])
def test_mixture_samples_have_mixture_moments(aggregate, stratified):
    torch.manual_seed(0)
    n = 8400  # divisible by 3 and by 7 components
    base = {
        "a": ([-3.0, 0.0], [0.5, 1.0]),
        "b": ([2.0, 1.0], [1.0, 0.3]),
        "c": ([0.0, -4.0], [2.0, 0.7]),
    }
    posteriors = {
        k: dist.Normal(torch.tensor(loc).expand(n, 2), torch.tensor(scale).expand(n, 2)).to_event(1)
        for k, (loc, scale) in base.items()
    }
    q = aggregate(posteriors, stratified=stratified)
    z = q.rsample()
    standard_error = (q.variance[0] / n).sqrt()
    assert ((z.mean(0) - q.mean[0]).abs() < 4 * standard_error).all()
    assert torch.allclose(z.var(0), q.variance[0], rtol=0.08)
    # hand-computed moments of the uniform MoE
    if aggregate is mixture_of_experts:
        locs = torch.tensor([loc for loc, _ in base.values()])
        scales = torch.tensor([scale for _, scale in base.values()])
        mean = locs.mean(0)
        assert torch.allclose(q.mean[0], mean)
        assert torch.allclose(q.variance[0], (scales ** 2 + locs ** 2).mean(0) - mean ** 2)


def test_stratified_blocks_follow_batch_position():
    b = 9
    posteriors = {
        n: dist.Normal(torch.full((b, 1), float(k)), torch.full((b, 1), 1e-6)).to_event(1) for k, n in enumerate("abc")
    }
    z = mixture_of_experts(posteriors).rsample((2,))
    expected = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2], dtype=torch.float32)
    assert torch.allclose(z[..., 0], expected.expand(2, b), atol=1e-4)
    # the last-dim quantile rule spreads a remainder: B = 10, K = 3 -> blocks of 3, 4, 3
    index = mixture_of_experts({n: dist.Normal(torch.zeros(10, 1), 1.0).to_event(1) for n in "abc"}).component_index()
    assert index.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    # MoPoE: block k uses subset k (7 subsets, B = 14)
    index = mixture_of_products({n: dist.Normal(torch.zeros(14, 1), 1.0).to_event(1) for n in "abc"}).component_index()
    assert index.tolist() == [k for k in range(7) for _ in range(2)]


def test_masked_samples_use_observed_components():
    b = 12
    posteriors = {
        n: dist.Normal(torch.full((b, 1), float(k)), torch.full((b, 1), 1e-6)).to_event(1) for k, n in enumerate("abc")
    }
    mask = {"a": torch.arange(b) % 2 == 0, "b": torch.arange(b) % 3 != 0, "c": torch.arange(b) % 5 != 1}
    observed = torch.stack([mask[n] for n in "abc"], dim=-1)
    for stratified in (True, False):
        q = mixture_of_experts(posteriors, mask, stratified=stratified)
        for _ in range(5):
            index = q.component_index()
            assert observed[torch.arange(b), index].all()
            z = q.rsample()
            assert observed[torch.arange(b), z[:, 0].round().long()].all()
    # every row sharing one mask pattern is stratified over its observed experts only
    q = mixture_of_experts(posteriors, {"b": torch.zeros(b, dtype=torch.bool)})
    assert q.component_index().tolist() == [0] * 6 + [2] * 6


@pytest.mark.parametrize(
    "aggregate, kwargs",
    [(average, {}), (product_of_experts, {"prior_expert": True})]
    + [(f, {"stratified": s}) for f in (mixture_of_experts, mixture_of_products) for s in (True, False)],
)
def test_gradients_reach_every_expert(aggregate, kwargs):
    params, posteriors = make_posteriors(b=64, requires_grad=True)
    z = aggregate(posteriors, **kwargs).rsample()
    z.pow(2).sum().backward()
    for name, (loc, scale) in params.items():
        for tensor in (loc, scale):
            assert tensor.grad is not None and torch.isfinite(tensor.grad).all(), name
            assert tensor.grad.abs().sum() > 0, name


@pytest.mark.parametrize("aggregate", AGGREGATORS)
def test_all_true_mask_equals_no_mask(aggregate):
    _, posteriors = make_posteriors()
    full = {n: torch.ones(5, dtype=torch.bool) for n in "abc"}
    for mask in (full, {"a": full["a"]}, {"a": None}, {"other": torch.zeros(5, dtype=torch.bool)}):
        q, r = aggregate(posteriors), aggregate(posteriors, mask)
        z = q.sample((3,))
        assert torch.allclose(q.log_prob(z), r.log_prob(z))
        assert torch.allclose(q.mean, r.mean) and torch.allclose(q.variance, r.variance)
        if isinstance(q, StratifiedMixture):
            assert torch.equal(q.log_weights, r.log_weights)
            assert torch.equal(q.component_index(), r.component_index())


@pytest.mark.parametrize("aggregate", AGGREGATORS)
def test_one_masked_expert_equals_aggregate_of_the_rest(aggregate):
    _, posteriors = make_posteriors()
    rest = {n: posteriors[n] for n in "ac"}
    mask = {"b": torch.tensor([False, True, False, True, True])}
    q, q_rest, q_all = aggregate(posteriors, mask), aggregate(rest), aggregate(posteriors)
    z = torch.randn(4, 5, 3, dtype=torch.float64)
    masked = ~mask["b"]
    if aggregate is not mixture_of_products:  # MoPoE keeps {a, b} -> {a} etc., checked by hand elsewhere
        assert torch.allclose(q.log_prob(z)[:, masked], q_rest.log_prob(z)[:, masked])
    assert torch.allclose(q.log_prob(z)[:, ~masked], q_all.log_prob(z)[:, ~masked])


def test_one_masked_expert_in_moe_and_poe_for_every_sample():
    params, posteriors = make_posteriors(b=3)
    mask = {"b": torch.zeros(3, dtype=torch.bool)}
    z = torch.randn(3, 3, dtype=torch.float64)
    moe = mixture_of_experts(posteriors, mask).log_prob(z)
    poe = product_of_experts(posteriors, mask, prior_expert=True)
    for b in range(3):
        density = sum(math.exp(normal_log_density(z[b].tolist(), loc, scale)) / 2 for loc, scale in sample_experts(params, b, "ac"))
        assert moe[b].item() == pytest.approx(math.log(density), rel=1e-9)
        loc, scale = product_by_formula(sample_experts(params, b, "ac"), True)
        assert torch.allclose(poe.base_dist.loc[b], torch.tensor(loc, dtype=torch.float64))
        assert torch.allclose(poe.base_dist.scale[b], torch.tensor(scale, dtype=torch.float64))


def test_two_modality_mopoe_with_one_masked_is_the_observed_posterior():
    _, posteriors = make_posteriors(names="ab")
    q = mixture_of_products(posteriors, {"b": torch.zeros(5, dtype=torch.bool)}, prior_expert="none")
    z = torch.randn(2, 5, 3, dtype=torch.float64)
    assert torch.allclose(q.log_prob(z), posteriors["a"].log_prob(z))
    assert q.weights[0].tolist() == [0.5, 0.0, 0.5]  # {a}, {b}, {a, b} -> {a}


@pytest.mark.parametrize("aggregate", AGGREGATORS)
def test_masked_garbage_does_not_leak(aggregate):
    params, posteriors = make_posteriors(requires_grad=True)
    bad_loc = torch.full((5, 3), float("nan"), dtype=torch.float64, requires_grad=True)
    bad_scale = torch.full((5, 3), float("inf"), dtype=torch.float64, requires_grad=True)
    posteriors["bad"] = dist.Normal(bad_loc, bad_scale, validate_args=False).to_event(1)
    mask = {"bad": torch.zeros(5, dtype=torch.bool)}
    q = aggregate(posteriors, mask)
    z = q.rsample()
    loss = z.sum() + q.log_prob(z.detach()).sum()
    assert torch.isfinite(loss)
    loss.backward()
    for tensor in (*params["a"], bad_loc, bad_scale):
        assert torch.isfinite(tensor.grad).all()
    assert (bad_loc.grad == 0).all() and (bad_scale.grad == 0).all()


@pytest.mark.parametrize("aggregate", AGGREGATORS)
def test_usable_as_pyro_guide_site(aggregate):
    pyro.clear_param_store()
    _, posteriors = make_posteriors(b=6, requires_grad=True)
    mask = {"a": torch.tensor([True, False, True, True, False, True])}

    def model():
        with pyro.plate("data", 6):
            pyro.sample("z", dist.Normal(torch.zeros(6, 3, dtype=torch.float64), 1.0).to_event(1))

    def guide():
        with pyro.plate("data", 6):
            pyro.sample("z", aggregate(posteriors, mask))

    for elbo in (pyro.infer.Trace_ELBO(), pyro.infer.Trace_ELBO(num_particles=3, vectorize_particles=True)):
        loss = elbo.differentiable_loss(model, guide)
        assert torch.isfinite(loss)
        loss.backward()
        assert torch.isfinite(posteriors["a"].base_dist.loc.grad).all()


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("aggregate", AGGREGATORS)
def test_every_expert_masked_names_the_sample(aggregate):
    _, posteriors = make_posteriors()
    mask = {n: torch.tensor([True, True, False, True, False]) for n in "abc"}
    with pytest.raises(ValueError, match="sample 2 has every expert masked"):
        aggregate(posteriors, mask)
    with pytest.raises(ValueError, match="sample 2 has every expert masked"):
        product_of_experts(posteriors, mask, prior_expert=True)


@pytest.mark.parametrize(
    "family, message",
    [([("a",), ("a", "z")], "unknown modality 'z'"), ([("a",), ()], "empty subset"),
     ([("a", "a")], "duplicate"), ([("a",), ("a",)], "duplicate")],
)
def test_bad_subset_family(family, message):
    _, posteriors = make_posteriors()
    with pytest.raises(ValueError, match=message):
        mixture_of_products(posteriors, family=family)


def test_custom_family_and_bad_options():
    params, posteriors = make_posteriors()
    q = mixture_of_products(posteriors, family=[("a", "b", "c")], prior_expert="full")
    poe = product_of_experts(posteriors, prior_expert=True)
    z = torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(q.log_prob(z), poe.log_prob(z))
    with pytest.raises(ValueError, match="prior_expert"):
        mixture_of_products(posteriors, prior_expert="some")


def test_bad_inputs():
    _, posteriors = make_posteriors()
    with pytest.raises(ValueError, match="no posteriors"):
        average({})
    with pytest.raises(TypeError, match="posterior 'x'"):
        average({**posteriors, "x": dist.Laplace(torch.zeros(5, 3), 1.0).to_event(1)})
    with pytest.raises(ValueError, match="shape"):
        average({**posteriors, "x": dist.Normal(torch.zeros(5, 2), 1.0).to_event(1)})
    with pytest.raises(ValueError, match=r"mask\['a'\]"):
        average(posteriors, {"a": torch.ones(4, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"mask\['a'\]"):
        average(posteriors, {"a": torch.ones(5)})
