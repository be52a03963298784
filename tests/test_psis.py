"""Pareto-smoothed importance sampling through ArviZ: known tail shapes, the smoothing's structure, batching."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.special import logsumexp

from pyromm import diagnostics as dg

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

TAIL_SHAPES = (0.25, 0.6, 1.2)


def pareto_log_weights(shape: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """log w for w = U^(−ξ), U ~ U(0, 1): a Pareto tail whose generalised Pareto shape is exactly ξ."""
    return -shape * np.log(rng.uniform(size=size))


def test_khat_recovers_known_tail_shapes_and_flags_the_heavy_one():
    """Guides whose weights have tail shape ξ = 0.25, 0.6, 1.2 (B = 3 targets at once): k̂ ≈ ξ (its sampling
    sd is ≤ 0.1 with S = 20000), reliable below 0.5, flagged above 0.7."""
    rng = np.random.default_rng(0)
    log_target = np.stack([pareto_log_weights(xi, 20000, rng) for xi in TAIL_SHAPES], axis=1)  # (S, B)
    khat, idata = dg.psis_khat(log_target, np.zeros_like(log_target))
    np.testing.assert_allclose(khat, TAIL_SHAPES, atol=0.3)
    assert khat[0] < 0.5 and khat[2] > 0.7
    np.testing.assert_allclose(idata.attrs["pareto_k"], khat)


def test_batched_psis_equals_arviz_per_target():
    rng = np.random.default_rng(1)
    log_target = 2.0 * rng.standard_t(4, size=(3000, 4))
    log_guide = rng.standard_normal((3000, 4))
    khat, idata = dg.psis_khat(log_target, log_guide)
    for b in range(4):
        smoothed, k = az.psislw(log_target[:, b] - log_guide[:, b])
        assert khat[b] == pytest.approx(float(k), abs=1e-12)
        np.testing.assert_allclose(idata.sample_stats["psis_log_weight"].values[0, :, b], smoothed, atol=1e-12)
        np.testing.assert_allclose(idata.sample_stats["log_weight"].values[0, :, b], log_target[:, b] - log_guide[:, b])


@pytest.mark.parametrize("r_eff", [1.0, 0.5])
def test_smoothing_replaces_only_the_tail_and_keeps_its_order(r_eff):
    """Only the M = ⌈min(S/5, 3√(S/r_eff))⌉ largest weights change; the body moves by the normalising constant
    alone; the smoothed tail keeps the raw ranks, never exceeds the largest raw weight, and the weights sum to 1."""
    size = 1000
    raw = pareto_log_weights(0.7, size, np.random.default_rng(2))
    smoothed, _ = dg.pareto_smooth(raw, r_eff)
    tail_len = math.ceil(min(size / 5, 3 * math.sqrt(size / r_eff)))
    order = np.argsort(raw)
    body, tail = order[:-tail_len], order[-tail_len:]
    assert logsumexp(smoothed) == pytest.approx(0.0, abs=1e-12)
    offset = smoothed[body] - raw[body]
    np.testing.assert_allclose(offset, offset[0], atol=1e-12)
    assert np.all(np.diff(smoothed[tail]) >= 0)
    assert np.all(smoothed[tail] <= raw.max() + offset[0] + 1e-12)
    assert not np.allclose(smoothed[tail] - raw[tail], offset[0])


def test_constant_weights_are_a_perfect_guide():
    """A guide proportional to the target: uniform weights and k̂ = −inf (ArviZ alone would say inf)."""
    smoothed, khat = dg.pareto_smooth(np.full(500, 3.7))
    assert khat == -math.inf
    np.testing.assert_allclose(smoothed, -math.log(500))
    columns = np.stack([np.full(500, 1.0), pareto_log_weights(0.3, 500, np.random.default_rng(3))], axis=1)
    khat, idata = dg.psis_khat(columns, np.zeros_like(columns))
    assert khat[0] == -math.inf and 0 < khat[1] < 0.7
    np.testing.assert_allclose(idata.sample_stats["psis_log_weight"].values[0, :, 0], -math.log(500))
