"""ArviZ diagnostics: InferenceData of every sampler, ArviZ summaries and plots, netCDF round trip, PSIS k̂."""
from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.mcmc import MCMC, NUTS

from pyromm import diagnostics as dg
from pyromm.infer.hmc import batched_hmc, nuts_subset_posterior
from pyromm.infer.subset_posterior import SubsetTarget

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

B, D = 3, 3
STATS = {"diverging", "step_size", "tree_depth", "n_steps", "energy", "acceptance_rate", "lp"}


def subset_target() -> SubsetTarget:
    g = torch.Generator().manual_seed(0)
    posteriors = {}
    for m in "abc":
        loc = torch.randn(B, D, generator=g, dtype=torch.float64)
        scale = 0.4 + 0.4 * torch.rand(B, D, generator=g, dtype=torch.float64)
        posteriors[m] = dist.Normal(loc, scale).to_event(1)
    prior = dist.Normal(torch.zeros(D, dtype=torch.float64), torch.ones(D, dtype=torch.float64)).to_event(1)
    return SubsetTarget.from_posteriors(posteriors, ["a", "b", "c"], prior)


@pytest.fixture(scope="module")
def runs():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    target = subset_target()
    nuts = nuts_subset_posterior(target, num_samples=60, num_warmup=30, num_chains=2, seed=0, index=1)
    init = target.init_from_members(4, seed=0)
    draws, stats = batched_hmc(target, init, 100, 60, num_leapfrog=3, generator=torch.Generator().manual_seed(0))
    torch.set_num_threads(threads)
    return {"target": target, "nuts": nuts, "draws": draws, "stats": stats}


def test_nuts_run_becomes_inference_data(runs):
    result = runs["nuts"]
    idata = result.to_inference_data()
    assert {"posterior", "sample_stats"} <= set(idata.groups())
    assert idata.posterior["z"].shape == (2, 60, D)
    assert set(idata.sample_stats.data_vars) == STATS
    for name, value in result.stats.items():
        np.testing.assert_array_equal(idata.sample_stats[dg.ARVIZ_NAMES.get(name, name)].values, value.numpy())
    np.testing.assert_array_equal(idata.posterior["z"].values, result.samples.numpy())
    # the Pyro runs themselves give the same data
    again = dg.from_pyro_mcmc(result.runs)
    np.testing.assert_array_equal(again.posterior["z"].values, idata.posterior["z"].values)
    for name in STATS:
        np.testing.assert_array_equal(again.sample_stats[name].values, idata.sample_stats[name].values)


def test_plain_pyro_kernel_gives_divergences_only():
    torch.manual_seed(0)
    mcmc = MCMC(NUTS(potential_fn=lambda p: 0.5 * (p["z"] ** 2).sum()), num_samples=20, warmup_steps=10,
                initial_params={"z": torch.zeros(2)}, disable_progbar=True)
    mcmc.run()
    with pytest.warns(UserWarning, match="besides divergences"):
        idata = dg.from_pyro_mcmc(mcmc)
    assert idata.posterior["z"].shape == (1, 20, 2)
    assert set(idata.sample_stats.data_vars) == {"diverging"}


@pytest.mark.filterwarnings("ignore::matplotlib.MatplotlibDeprecationWarning")  # arviz 0.23 with matplotlib 3.11
def test_summary_and_plots_run(runs):
    idata = runs["nuts"].to_inference_data()
    summary = az.summary(idata)
    assert {"r_hat", "ess_bulk", "ess_tail", "mean", "sd"} <= set(summary.columns) and len(summary) == D
    batched = dg.from_batched_hmc(runs["draws"], runs["stats"])
    assert batched.posterior["z"].dims == ("chain", "draw", "target", "z_dim")
    assert batched.sample_stats["energy"].shape == (4, 60, B)
    assert len(az.summary(batched, kind="diagnostics")) == B * D
    one = dg.from_batched_hmc(runs["draws"], runs["stats"], target=2)
    assert set(one.sample_stats.data_vars) == {"acceptance_rate", "step_size", "energy", "lp", "diverging", "n_steps"}
    for data in (idata, one):
        az.plot_trace(data)
        az.plot_energy(data)
        az.plot_rank(data)
        plt.close("all")


def test_inference_data_round_trips_through_netcdf(runs, tmp_path):
    idata = runs["nuts"].to_inference_data()
    loaded = dg.load(dg.save(idata, tmp_path / "nuts.nc"))
    assert set(loaded.groups()) == set(idata.groups())
    np.testing.assert_array_equal(loaded.posterior["z"].values, idata.posterior["z"].values)
    for name in STATS:
        np.testing.assert_array_equal(loaded.sample_stats[name].values, idata.sample_stats[name].values)
    log_target = np.random.default_rng(0).standard_normal((200, B))
    khat, psis = dg.psis_khat(log_target, np.zeros((200, B)), np.zeros((200, B, D)))
    loaded = dg.load(dg.save(psis, tmp_path / "psis.nc"))
    for name in ("log_weight", "psis_log_weight"):
        np.testing.assert_array_equal(loaded.sample_stats[name].values, psis.sample_stats[name].values)
    np.testing.assert_allclose(loaded.attrs["pareto_k"], khat)


def test_guide_draws_become_inference_data():
    draws = torch.randn(100, D)
    assert dg.guide_to_inference_data(draws).posterior["z"].shape == (1, 100, D)
    assert dg.guide_to_inference_data(draws.reshape(2, 50, D), chains=True).posterior["z"].shape == (2, 50, D)
    sites = dg.guide_to_inference_data({"z": draws, "scale": torch.rand(100)})
    assert set(sites.posterior.data_vars) == {"z", "scale"}
    assert "sample_stats" not in sites.groups()


def test_psis_khat_separates_good_and_bad_guides():
    """k̂ of guides for the |S| = 3 target (B = 3): the target itself, a wider one, a narrow shifted one."""
    target = subset_target()
    exact = target.closed_form()
    loc, scale = exact.base_dist.loc, exact.base_dist.scale
    guides = {
        "exact": exact,
        "wider": dist.Normal(loc, 1.2 * scale).to_event(1),
        "mismatched": dist.Normal(loc + scale, 0.4 * scale).to_event(1),
    }
    torch.manual_seed(0)
    khat = {}
    for name, guide in guides.items():
        z = guide.sample((4000,))  # (S, B, D)
        khat[name], idata = dg.psis_khat(target(z), guide.log_prob(z), draws=z)
        assert khat[name].shape == (B,)
        assert idata.posterior["z"].shape == (1, 4000, B, D)
        assert set(idata.sample_stats.data_vars) == {"log_weight", "psis_log_weight"}
        np.testing.assert_allclose(np.exp(idata.sample_stats["psis_log_weight"].values).sum(1), 1.0)
        np.testing.assert_allclose(idata.attrs["pareto_k"], khat[name])
    assert np.all(khat["exact"] < 0.5) and np.all(khat["wider"] < 0.5)
    assert np.all(khat["mismatched"] > 0.7)


def test_pareto_smoothing_agrees_with_arviz():
    rng = np.random.default_rng(1)
    for df in (2, 5, 30):
        log_weights = 2.0 * rng.standard_t(df, size=3000)
        smoothed, k = dg.pareto_smooth(log_weights)
        reference, k_reference = az.psislw(log_weights.copy())
        assert k == pytest.approx(float(k_reference), abs=1e-10)
        np.testing.assert_allclose(smoothed, reference, atol=1e-10)


def arviz_future_warning() -> None:
    """A FutureWarning raised from a frame of the module ``arviz``, as ArviZ 0.23 warns on import."""
    exec("import warnings\nwarnings.warn('ArviZ is undergoing a major refactor', FutureWarning)", {"__name__": "arviz"})


def test_no_arviz_future_warning_escapes_pyromm(runs, recwarn, tmp_path):
    dg.mcmc_to_inference_data(runs["nuts"].samples, runs["nuts"].stats)
    dg.guide_to_inference_data(torch.randn(10, D))
    dg.load(dg.save(dg.from_batched_hmc(runs["draws"], runs["stats"]), tmp_path / "b.nc"))
    dg.psis_khat(np.random.default_rng(0).standard_normal(100), np.zeros(100))
    with dg._arviz():  # where pyromm imports and calls arviz
        arviz_future_warning()
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]
    with pytest.warns(FutureWarning, match="refactor"):  # silenced there only, never globally
        arviz_future_warning()


class FailingWrite:
    """InferenceData stand-in whose netCDF write fails half-way (after creating the file)."""

    def to_netcdf(self, path):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")


def test_save_is_atomic(runs, tmp_path):
    path = tmp_path / "nested" / "runs.nc"
    dg.save(dg.from_batched_hmc(runs["draws"], runs["stats"]), path)
    before = path.read_bytes()
    with pytest.raises(OSError, match="disk full"):
        dg.save(FailingWrite(), path)
    assert path.read_bytes() == before  # the complete old file, never a partial one
    assert [p.name for p in path.parent.iterdir()] == ["runs.nc"]  # no temporary file left behind
