"""batched_hmc's adaptation through Pyro's DualAveraging and WelfordCovariance, checked on closed forms."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from pyro.ops.dual_averaging import DualAveraging
from pyro.ops.welford import WelfordCovariance

from pyromm.diagnostics import from_batched_hmc
from pyromm.infer.hmc import _pooled_variance, _step_size_averaging, batched_hmc

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

pytestmark = pytest.mark.usefixtures("one_thread")

SCALES = torch.tensor([0.05, 1.0, 20.0], dtype=torch.float64)  # one isotropic scale per target


def independent_gaussians(scales: torch.Tensor, dim: int, seed: int = 0):
    """B independent Gaussian targets N(μ_b, diag σ_bd²), σ_bd = scales_b · (1, 2, …, D): (μ, σ, log π)."""
    g = torch.Generator().manual_seed(seed)
    loc = scales[:, None] * torch.randn(len(scales), dim, generator=g, dtype=torch.float64) + 3.0
    scale = scales[:, None] * torch.arange(1, dim + 1, dtype=torch.float64)

    def log_density(z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (((z - loc) / scale) ** 2).sum(-1)

    return loc, scale, log_density


def test_dual_averaging_on_a_tensor_follows_its_closed_form_per_target():
    """For a constant g_b = δ − a_b, H̄_t = g t/(t + t₀), so log ε_t = log ε₀ − √t · g t/((t + t₀) γ)."""
    eps0 = torch.tensor([0.01, 0.3, 2.0], dtype=torch.float64)
    g = torch.tensor([0.2, 0.0, -0.1], dtype=torch.float64)
    averaging = _step_size_averaging(eps0)
    log_bar = torch.zeros_like(eps0)
    for t in range(1, 51):
        averaging.step(g)
        log_eps, log_eps_bar = averaging.get_state()
        expected = torch.log(eps0) - math.sqrt(t) * g * t / ((t + 10) * 0.05)
        log_bar = t**-0.75 * expected + (1 - t**-0.75) * log_bar
        torch.testing.assert_close(log_eps, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(log_eps_bar, log_bar, rtol=1e-12, atol=1e-12)
    assert log_eps[1] == math.log(0.3)  # a target at the acceptance goal keeps its step size


def test_dual_averaging_on_a_tensor_equals_one_scalar_scheme_per_target():
    eps0 = torch.tensor([0.01, 0.3, 2.0], dtype=torch.float64)
    batched = _step_size_averaging(eps0)
    scalars = [DualAveraging(prox_center=math.log(e)) for e in eps0.tolist()]
    gradients = torch.rand(40, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5
    for g in gradients:
        batched.step(g)
        for scheme, g_b in zip(scalars, g.tolist()):
            scheme.step(g_b)
    for b, scheme in enumerate(scalars):
        for batched_value, scalar_value in zip(batched.get_state(), scheme.get_state()):
            assert float(batched_value[b]) == pytest.approx(scalar_value, rel=1e-12)


def test_pooled_welford_variance_is_stans_regularised_variance_per_target():
    """Draws (T, C, B, D) fed chain by chain: v = n/(n+5)·Var + 10⁻³·5/(n+5) over the n = T·C pooled draws."""
    g = torch.Generator().manual_seed(1)
    draws = 5.0 + SCALES[None, None, :, None] * torch.randn(30, 4, 3, 2, generator=g, dtype=torch.float64)
    window = WelfordCovariance(diagonal=True)
    for z in draws:
        _pooled_variance(window, z)
    n = 30 * 4
    pooled = draws.reshape(n, 3, 2).numpy()
    expected = n / (n + 5) * pooled.var(0, ddof=1) + 1e-3 * 5 / (n + 5)
    assert window.n_samples == n
    np.testing.assert_allclose(window.get_covariance(regularize=True).numpy(), expected, rtol=1e-12)


def test_batched_hmc_recovers_the_moments_of_independent_gaussian_targets():
    """Targets 400 times apart in scale, one call: means and standard deviations within 4 of ArviZ's Monte Carlo
    standard errors of each."""
    loc, scale, log_density = independent_gaussians(SCALES, dim=2)
    init = loc + scale * torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    draws, stats = batched_hmc(log_density, init, 300, 600, num_leapfrog=3, generator=torch.Generator().manual_seed(3))
    assert not stats["diverging"].any()
    idata = from_batched_hmc(draws, stats)
    mcse_mean = az.mcse(idata, method="mean")["z"].values  # (B, D)
    mcse_sd = az.mcse(idata, method="sd")["z"].values
    assert az.ess(idata, method="sd")["z"].values.min() > 300
    pooled = draws.reshape(-1, 3, 2).numpy()
    assert np.all(np.abs(pooled.mean(0) - loc.numpy()) < 4 * mcse_mean)
    assert np.all(np.abs(pooled.std(0, ddof=1) - scale.numpy()) < 4 * mcse_sd)


def adapted_step_sizes(mass: str) -> torch.Tensor:
    """The step size per target after warm-up (jitter 0) on the targets of scales ``SCALES``."""
    loc, scale, log_density = independent_gaussians(SCALES, dim=2, seed=4)
    init = loc + scale * torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    _, stats = batched_hmc(
        log_density, init, 200, 1, num_leapfrog=3, mass=mass, jitter=0.0, generator=torch.Generator().manual_seed(6)
    )
    return stats["step_size"][0, 0]


def test_step_size_is_adapted_per_target():
    """Leapfrog acceptance on a Gaussian depends on ε/σ only: with M = I the adapted ε_b scales with σ_b; with the
    adapted diagonal mass every target is standardised, so ε_b no longer depends on σ_b."""
    identity = adapted_step_sizes("identity")
    ratio = (identity / SCALES).numpy()
    assert ratio.max() / ratio.min() < 1.5
    assert float(identity[2] / identity[0]) > 200  # the scales are 400 apart
    diag = adapted_step_sizes("diag").numpy()
    assert diag.max() / diag.min() < 1.5
