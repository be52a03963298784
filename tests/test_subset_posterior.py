"""Subset-posterior targets and samplers against the closed-form Gaussian product of experts."""
from __future__ import annotations

import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from scipy import stats as st

from pyromm.data.batch import MultimodalBatch
from pyromm.diagnostics import from_batched_hmc, mcmc_to_inference_data
from pyromm.infer.hmc import (
    DivergenceWarning,
    adaptation_windows,
    batched_hmc,
    nuts_subset_posterior,
    reference_hmc,
)
from pyromm.infer.subset_posterior import SubsetTarget

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

B, D = 3, 3
NAMES = ("a", "b", "c")


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_posteriors(seed: int = 0) -> dict[str, dist.Independent]:
    """Diagonal Normal unimodal posteriors q_m(z | x_m) for B = 3 test samples, D = 3, float64."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m in NAMES:
        loc = torch.randn(B, D, generator=g, dtype=torch.float64)
        scale = 0.35 + 0.45 * torch.rand(B, D, generator=g, dtype=torch.float64)
        out[m] = dist.Normal(loc, scale, validate_args=False).to_event(1)
    return out


def standard_prior() -> dist.Independent:
    zeros = torch.zeros(D, dtype=torch.float64)
    return dist.Normal(zeros, torch.ones_like(zeros), validate_args=False).to_event(1)


def expected_moments(posteriors, subset, c) -> tuple[np.ndarray, np.ndarray]:
    """Closed form with full matrices: Λ = Σ_m Λ_m − c I, μ = Λ⁻¹ Σ_m Λ_m μ_m; returns (B, D), (B, D, D)."""
    means, covs = [], []
    for b in range(B):
        precisions = [np.diag(posteriors[m].base_dist.scale[b].numpy() ** -2) for m in subset]
        locs = [posteriors[m].base_dist.loc[b].numpy() for m in subset]
        precision = sum(precisions) - c * np.eye(D)
        cov = np.linalg.inv(precision)
        means.append(cov @ sum(p @ mu for p, mu in zip(precisions, locs)))
        covs.append(cov)
    return np.stack(means), np.stack(covs)


def check_against_gaussian(draws: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> dict[str, float]:
    """Draws (chains, N, D) of one target against N(mean, cov).

    The means of z_d and of (z_i − μ_i)(z_j − μ_j) must be within 5 Monte Carlo standard errors (ArviZ's
    mcse_mean of each feature, which accounts for autocorrelation) of μ_d and Σ_ij; r̂ < 1.01 for every
    coordinate; a KS test per coordinate against N(μ_d, Σ_dd) must give p > 0.01, on the draws thinned by
    ⌈draws / min ESS⌉ so that they are close to independent, as the test assumes.
    """
    rows, cols = np.triu_indices(D)
    centred = draws - mean
    features = np.concatenate([draws, centred[..., rows] * centred[..., cols]], -1)
    expected = np.concatenate([mean, cov[rows, cols]])
    summary = az.summary(mcmc_to_inference_data(features), kind="diagnostics", round_to="none")
    errors = (features.reshape(-1, features.shape[-1]).mean(0) - expected) / summary["mcse_mean"].to_numpy()
    summary = az.summary(mcmc_to_inference_data(draws), kind="diagnostics", round_to="none")
    thin = int(np.ceil(draws.shape[0] * draws.shape[1] / summary[["ess_bulk", "ess_tail"]].to_numpy().min()))
    flat = draws[:, ::thin].reshape(-1, D)
    sd = np.sqrt(np.diag(cov))
    pvalues = [st.kstest(flat[:, d], st.norm(mean[d], sd[d]).cdf).pvalue for d in range(D)]
    assert np.abs(errors).max() < 5, errors
    assert summary["r_hat"].max() < 1.01, summary
    assert min(pvalues) > 0.01, pvalues
    return {"error/mcse": np.abs(errors).max(), "ks_p": min(pvalues), "r_hat": summary["r_hat"].max(), "thin": thin}


def test_target_formula_prior_powers_and_closed_form():
    posteriors, prior = gaussian_posteriors(), standard_prior()
    z = torch.randn(5, B, D, dtype=torch.float64)
    log_prior = prior.log_prob(z)
    for subset in (["a", "b"], ["a", "b", "c"]):
        qs = sum(posteriors[m].log_prob(z) for m in subset)
        product = SubsetTarget.from_posteriors(posteriors, subset, prior, "subset")
        once = SubsetTarget.from_posteriors(posteriors, subset, prior, "once")
        torch.testing.assert_close(product(z), qs - (len(subset) - 1) * log_prior)
        torch.testing.assert_close(once(z), qs - log_prior)
        torch.testing.assert_close(product(z) - once(z), -(len(subset) - 2) * log_prior)
        for target, c in ((product, len(subset) - 1), (once, 1)):
            closed = target.closed_form()
            mean, cov = expected_moments(posteriors, subset, c)
            np.testing.assert_allclose(closed.mean.numpy(), mean, rtol=1e-10)
            np.testing.assert_allclose(closed.variance.numpy(), np.diagonal(cov, axis1=1, axis2=2), rtol=1e-10)
            difference = target(z) - closed.log_prob(z)  # normalising constant only
            torch.testing.assert_close(difference, difference[:1].expand_as(difference))
    # |S| = 3: the product of experts removes one more prior than the reference: precision differs by I
    three = [SubsetTarget.from_posteriors(posteriors, NAMES, prior, p).closed_form() for p in ("subset", "once")]
    precision_gap = three[1].variance.reciprocal() - three[0].variance.reciprocal()
    torch.testing.assert_close(precision_gap, torch.ones(B, D, dtype=torch.float64))
    # selecting one target maps (..., D) -> (...)
    single = SubsetTarget.from_posteriors(posteriors, NAMES, prior).select(2)
    torch.testing.assert_close(single(z[:, 2]), SubsetTarget.from_posteriors(posteriors, NAMES, prior)(z)[:, 2])


def test_bad_subsets_and_options():
    posteriors, prior = gaussian_posteriors(), standard_prior()
    with pytest.raises(ValueError, match="empty"):
        SubsetTarget.from_posteriors(posteriors, [], prior)
    with pytest.raises(ValueError, match="empty"):
        SubsetTarget([], prior)
    with pytest.raises(KeyError, match="unknown modality 'x'"):
        SubsetTarget.from_posteriors(posteriors, ["a", "x"], prior)
    with pytest.raises(ValueError, match="prior_power"):
        SubsetTarget.from_posteriors(posteriors, ["a"], prior, "twice")
    with pytest.raises(ValueError, match="improper"):
        narrow = {m: dist.Normal(torch.zeros(D), 3 * torch.ones(D)).to_event(1) for m in NAMES}
        prior = dist.Normal(torch.zeros(D), torch.ones(D)).to_event(1)
        SubsetTarget.from_posteriors(narrow, NAMES, prior).closed_form()


def test_nan_at_initial_point_is_named():
    posteriors, prior = gaussian_posteriors(), standard_prior()
    loc = posteriors["b"].base_dist.loc.clone()
    loc[1, 0] = float("nan")
    posteriors["b"] = dist.Normal(loc, posteriors["b"].base_dist.scale, validate_args=False).to_event(1)
    target = SubsetTarget.from_posteriors(posteriors, ["a", "b"], prior)
    init = torch.zeros(2, B, D, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"log q_b\(z \| x_b\) is nan at the initial point, position \(0, 1\)"):
        batched_hmc(target, init, 10, 10)
    with pytest.raises(ValueError, match=r"log q_b\(z \| x_b\) is nan"):
        nuts_subset_posterior(target, 10, 10, num_chains=2, init=init[:, 1], index=1)
    with pytest.raises(ValueError, match="target's log-density is nan"):
        batched_hmc(lambda z: z.sum(-1) * float("nan"), init, 10, 10)


def test_zero_samples_and_bad_arguments():
    target = SubsetTarget.from_posteriors(gaussian_posteriors(), ["a", "b"], standard_prior())
    with pytest.raises(ValueError, match="NUTS needs num_samples >= 1"):
        nuts_subset_posterior(target, 0, 10)
    with pytest.raises(ValueError, match="num_samples"):
        batched_hmc(target, torch.zeros(2, B, D, dtype=torch.float64), 10, 0)
    with pytest.raises(ValueError, match="mass"):
        batched_hmc(target, torch.zeros(2, B, D, dtype=torch.float64), 10, 10, mass="full")
    with pytest.raises(ValueError, match="init must have shape"):
        batched_hmc(target, torch.zeros(B, D, dtype=torch.float64), 10, 10)


def test_adaptation_windows_follow_stan():
    assert adaptation_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    assert adaptation_windows(150) == [(75, 100)]
    assert adaptation_windows(100) == [(15, 90)]
    assert adaptation_windows(10) == []


@pytest.fixture(scope="module")
def sampled():
    """Both paths on the Gaussian problem: the batched path on |S| = 2 and |S| = 3 (three test samples each,
    B = 6 independent targets in one call), Pyro's NUTS on target 1 of |S| = 3; 4 chains each."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    posteriors, prior = gaussian_posteriors(), standard_prior()
    two = SubsetTarget.from_posteriors(posteriors, ["a", "c"], prior)
    three = SubsetTarget.from_posteriors(posteriors, NAMES, prior)

    def both(z):
        return torch.cat([two(z[..., :B, :]), three(z[..., B:, :])], -1)

    init = torch.cat([two.init_from_members(4, seed=1), three.init_from_members(4, seed=2)], 1)
    # two leapfrog steps: after mass adaptation this D = 3 problem is standardised with ε ≈ 1, so a trajectory
    # turns by ~2 ± 1 rad, close to the π/2 that decorrelates both z and z² (the cheapest setting here)
    draws, stats = batched_hmc(both, init, 150, 1500, num_leapfrog=2, generator=torch.Generator().manual_seed(3))
    nuts = nuts_subset_posterior(three, num_samples=250, num_warmup=50, num_chains=4, seed=0, index=1)
    torch.set_num_threads(threads)
    moments = [expected_moments(posteriors, ["a", "c"], 1), expected_moments(posteriors, NAMES, 2)]
    return {"both": both, "three": three, "draws": draws, "stats": stats, "nuts": nuts, "moments": moments}


def test_batched_hmc_matches_closed_form(sampled):
    draws, stats, both = sampled["draws"], sampled["stats"], sampled["both"]
    assert draws.shape == (1500, 4, 2 * B, D)
    assert set(stats) == {"accept_prob", "step_size", "energy", "lp", "diverging", "n_steps"}
    assert all(v.shape == (1500, 4, 2 * B) for v in stats.values())
    assert not stats["diverging"].any() and bool((stats["n_steps"] == 2).all())
    assert 0.7 < float(stats["accept_prob"].mean()) < 0.98
    torch.testing.assert_close(stats["lp"], both(draws))
    for j in range(2 * B):
        mean, cov = sampled["moments"][j // B]
        check_against_gaussian(draws[:, :, j].movedim(0, 1).numpy(), mean[j % B], cov[j % B])
    assert az.summary(from_batched_hmc(draws, stats), kind="diagnostics", round_to="none")["r_hat"].max() < 1.01


def test_batched_hmc_is_reproducible(sampled):
    init = sampled["three"].init_from_members(2, seed=0)
    first, _ = batched_hmc(sampled["three"], init, 50, 5, generator=torch.Generator().manual_seed(4))
    second, _ = batched_hmc(sampled["three"], init, 50, 5, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(first, second)


def test_nuts_matches_closed_form_and_the_batched_path(sampled):
    result, target = sampled["nuts"], sampled["three"]
    assert result.samples.shape == (4, 250, D) and len(result.runs) == 4
    mean, cov = sampled["moments"][1]
    check_against_gaussian(result.samples.numpy(), mean[1], cov[1])
    # the two paths agree with each other (draws thinned by 2: both have ESS >= N/2 per coordinate)
    nuts = result.samples[:, ::2].reshape(-1, D).numpy()
    batched = sampled["draws"][::2, :, B + 1].reshape(-1, D).numpy()
    for d in range(D):
        assert st.ks_2samp(nuts[:, d], batched[:, d]).pvalue > 0.01
    stats = result.stats
    assert set(stats) == {"accept_prob", "step_size", "energy", "lp", "diverging", "n_steps", "tree_depth"}
    assert not stats["diverging"].any()
    assert bool(((stats["accept_prob"] >= 0) & (stats["accept_prob"] <= 1)).all())
    assert bool((stats["n_steps"] <= 2 ** stats["tree_depth"] - 1).all())
    assert bool((stats["n_steps"] >= stats["tree_depth"]).all())
    torch.testing.assert_close(stats["lp"], target.select(1)(result.samples))


def test_nuts_seed_reproduces_and_leaves_the_global_generator_alone(sampled):
    state = torch.get_rng_state()
    first = nuts_subset_posterior(sampled["three"], 5, 5, num_chains=1, seed=7, index=1)
    assert torch.equal(state, torch.get_rng_state())
    second = nuts_subset_posterior(sampled["three"], 5, 5, num_chains=1, seed=7, index=1)
    torch.testing.assert_close(first.samples, second.samples)


class CountingModel:
    """The inference contract's encode/prior, counting encoder calls."""

    modality_names = list(NAMES)

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(5)
        self.encoders = {m: torch.nn.Linear(4, 2 * D).double() for m in NAMES}
        for net in self.encoders.values():
            torch.nn.init.normal_(net.weight, std=0.3, generator=g)
        self.calls = 0

    def encode(self, batch: MultimodalBatch) -> dict[str, dist.Independent]:
        out = {}
        for m, x in batch.data.items():
            self.calls += 1
            loc, log_var = self.encoders[m](x).chunk(2, -1)
            out[m] = dist.Normal(loc, torch.exp(0.5 * log_var.clamp(max=-0.5))).to_event(1)
        return out

    def prior(self, batch: MultimodalBatch) -> dist.Independent:
        zeros = torch.zeros(batch.batch_size, D, dtype=torch.float64)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)


def test_samplers_never_rerun_the_encoders_but_the_reference_does():
    model = CountingModel()
    batch = MultimodalBatch({m: torch.randn(B, 4, dtype=torch.float64) for m in NAMES})
    target = SubsetTarget.from_model(model, batch, ["a", "b"])
    assert model.calls == 2
    partial = MultimodalBatch(batch.data, mask={"b": torch.tensor([True, False, True])})
    with pytest.raises(ValueError, match="'b' of the subset is missing in 1 samples"):
        SubsetTarget.from_model(model, partial, ["a", "b"])
    batched_hmc(target, target.init_from_members(2, seed=0), 60, 20, num_leapfrog=3)
    nuts_subset_posterior(target, 20, 30, num_chains=2, seed=0, index=0)
    nuts_subset_posterior(target, 20, 30, num_chains=1, seed=0, index=2, kernel="hmc", step_size=0.1)
    assert model.calls == 2

    def reencoding(z):  # MultiVae's target: encoders re-run at every evaluation
        posteriors = model.encode(batch.select(["a", "b"]))
        return SubsetTarget.from_posteriors(posteriors, ["a", "b"], model.prior(batch), "once")(z)

    model.calls = 0
    final = reference_hmc(reencoding, target.init_from_members(4, seed=1), mcmc_steps=3, n_lf=4)
    assert final.shape == (4, B, D)
    assert model.calls == 2 * 3 * (4 + 1)


def test_reference_hmc_is_a_valid_sampler():
    """Started at the closed-form posterior, MultiVae's sampler stays there (it leaves the target invariant)."""
    posteriors, prior = gaussian_posteriors(), standard_prior()
    target = SubsetTarget.from_posteriors(posteriors, ["a", "b"], prior, "once")
    closed = target.closed_form()
    g = torch.Generator().manual_seed(0)
    init = closed.mean + closed.stddev * torch.randn(2000, B, D, generator=g, dtype=torch.float64)
    final = reference_hmc(target, init, mcmc_steps=20, n_lf=10, eps=0.05, generator=g)
    assert not torch.equal(final, init)
    standard = ((final - closed.mean) / closed.stddev).reshape(-1, B * D).numpy()
    assert np.abs(standard.mean(0)).max() < 5 / np.sqrt(2000)
    assert np.abs(standard.std(0) - 1).max() < 5 / np.sqrt(2 * 2000)


def test_divergences_are_kept_flagged_and_warned():
    target = SubsetTarget.from_posteriors(gaussian_posteriors(), NAMES, standard_prior())
    init = target.init_from_members(2, seed=0)
    with pytest.warns(DivergenceWarning, match="diverged"):
        draws, stats = batched_hmc(target, init, 0, 20, step_size=5.0, adapt_step_size=False, jitter=0.0)
    assert draws.shape == (20, 2, B, D) and int(stats["diverging"].sum()) > 0
    assert bool((stats["accept_prob"][stats["diverging"]] < 1e-100).all())
    with pytest.warns(DivergenceWarning, match="Pyro NUTS: 10 of 10"):
        result = nuts_subset_posterior(target, 5, 0, num_chains=2, seed=0, step_size=5.0, adapt_step_size=False)
    pyro_counts = [len(run.diagnostics()["divergences"]["chain 0"]) for run in result.runs]
    assert result.stats["diverging"].sum(1).tolist() == pyro_counts == [5, 5]
