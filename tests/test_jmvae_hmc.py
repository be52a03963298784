"""JMVAE's subset posteriors by HMC on request agree with its closed-form product of experts."""
from __future__ import annotations

import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from scipy import stats as st
from torch import nn

from pyromm.data import MultimodalBatch, MultimodalDataset
from pyromm.diagnostics import mcmc_to_inference_data
from pyromm.evaluation import coherence_by_num_inputs
from pyromm.infer import SubsetHMC, SubsetTarget
from pyromm.likelihoods import Laplace
from pyromm.models import JointEncoder, JointEncoderVAE, Modality
from pyromm.nn import MLPEncoder

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

D, DIM, B = 3, 5, 4
NAMES = ("a", "b", "c")


pytestmark = pytest.mark.usefixtures("one_thread")


def jmvae(subset_inference=None) -> JointEncoderVAE:
    """Three modalities with small MLP encoders (the same weights for every call)."""
    torch.manual_seed(0)
    mods = [
        Modality(n, MLPEncoder(DIM, D, hidden=(16,)), nn.Linear(D, DIM), Laplace(1, 0.75), (DIM,)) for n in NAMES
    ]
    joint = JointEncoder({n: nn.Linear(DIM, 6) for n in NAMES}, {n: 6 for n in NAMES}, D, hidden=(8,))
    return JointEncoderVAE(mods, D, joint, subset_inference=subset_inference)


def batch_of(n: int = B) -> MultimodalBatch:
    g = torch.Generator().manual_seed(1)
    return MultimodalBatch({m: torch.randn(n, DIM, generator=g) for m in NAMES})


def test_hmc_draws_match_the_closed_form_product_of_experts():
    """Draws of π_S ∝ q_a q_c for B = 4 samples: per coordinate, the mean and the second central moment within
    5 Monte Carlo standard errors of the PoE's, r̂ < 1.01, and a KS test on ESS-thinned draws with p > 0.001."""
    sampler = SubsetHMC(num_samples=1500, num_warmup=150, num_chains=4, num_leapfrog=2)
    model, batch = jmvae(sampler), batch_of()
    with torch.no_grad():
        poe = jmvae().infer(batch, ["a", "c"])
        closed = SubsetTarget.from_model(model, batch, ["a", "c"], "none").closed_form()
    torch.testing.assert_close(closed.mean, poe.mean)
    torch.testing.assert_close(closed.stddev, poe.stddev)
    torch.manual_seed(2)
    draws, stats = sampler.draws(model, batch, ["a", "c"])
    assert draws.shape == (1500, 4, B, D) and not stats["diverging"].any()
    mean, sd = poe.mean.double().numpy(), poe.stddev.double().numpy()
    for b in range(B):
        chains = draws[:, :, b].movedim(0, 1).double().numpy()  # (C, N, D)
        features = np.concatenate([chains, (chains - mean[b]) ** 2], -1)
        summary = az.summary(mcmc_to_inference_data(features), kind="diagnostics", round_to="none")
        errors = (features.reshape(-1, 2 * D).mean(0) - np.concatenate([mean[b], sd[b] ** 2])) / summary["mcse_mean"]
        assert np.abs(errors.to_numpy()).max() < 5, (b, errors)
        assert summary["r_hat"].max() < 1.01, summary
        thin = int(np.ceil(chains.shape[0] * chains.shape[1] / summary["ess_bulk"].min()))
        flat = chains[:, ::thin].reshape(-1, D)
        pvalues = [st.kstest(flat[:, d], st.norm(mean[b, d], sd[b, d]).cdf).pvalue for d in range(D)]
        assert min(pvalues) > 1e-3, (b, pvalues)


def test_infer_samples_only_proper_subsets_and_encodes_once():
    hmc, poe, batch = jmvae(SubsetHMC()), jmvae(), batch_of()
    calls = []
    for encoder in hmc.encoders.values():
        encoder.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        for subset in (["b"], list(NAMES)):
            expected, got = poe.infer(batch, subset), hmc.infer(batch, subset)
            torch.testing.assert_close(got.mean, expected.mean)
            torch.testing.assert_close(got.stddev, expected.stddev)
        calls.clear()
        q = hmc.infer(batch, ["c", "a"])
    assert len(calls) == 2, "the subset sampler re-ran the encoders"
    assert isinstance(q, dist.Empirical) and q.batch_shape == (B,) and q.event_shape == (D,)
    assert q.sample().shape == (B, D) and q.sample((5,)).shape == (5, B, D)
    assert hmc.config()["subset_inference"] == repr(SubsetHMC())
    assert poe.config()["subset_inference"] == "poe"
    with pytest.raises(TypeError, match="subset_inference must be None .* or a sampler .* got 'hmc'"):
        jmvae("hmc")
    with pytest.raises(ValueError, match="prior_power"):
        SubsetHMC(prior_power="twice")
    with pytest.raises(ValueError, match="num_samples"):
        SubsetHMC(num_samples=0)


def test_hmc_subsets_need_every_sample_to_observe_the_subset():
    batch = batch_of()
    masked = MultimodalBatch(batch.data, mask={"c": torch.tensor([True, False, True, True])})
    with torch.no_grad(), pytest.raises(ValueError, match="'c' of the subset is missing in 1 samples"):
        jmvae(SubsetHMC()).infer(masked, ["a", "c"])


def test_coherence_by_number_of_inputs_runs_on_hmc_subset_posteriors():
    model = jmvae(SubsetHMC(num_samples=5, num_warmup=100))
    data = batch_of(12).data
    test = MultimodalDataset(data, labels=torch.arange(12) % 3)
    classifiers = {m: nn.Linear(DIM, 3) for m in NAMES}
    result = coherence_by_num_inputs(model, test, classifiers, generator=torch.Generator().manual_seed(0))
    assert sorted(result["subset"]) == sorted(
        ["a->b", "a->c", "b->a", "b->c", "c->a", "c->b", "a+b->c", "a+c->b", "b+c->a"]
    )
    assert all(0.0 <= v <= 1.0 for v in result["subset"].values())
