"""Shared-latent models (AVG, PoE, MoE, MoPoE, MVAE, MVTCAE) against hand-written reference formulas."""
import itertools
import math

import pytest
import torch
import pyro
import pyro.distributions as dist
from torch import nn

from pyromm.data import MultimodalBatch
from pyromm.infer import ELBOObjective, RateELBO
from pyromm.infer.rates import rate
from pyromm.infer.traces import log_prob, run_pair
from pyromm.likelihoods import Laplace
from pyromm.models import MVAE, MVTCAE, Modality, SharedLatentVAE

D, DIM, B = 3, 4, 6
NAMES = ("a", "b", "c")


class LinearEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(DIM, 2 * D)

    def forward(self, x):
        return self.net(x).chunk(2, -1)


def modalities_of(names=NAMES):
    torch.manual_seed(0)
    return [Modality(n, LinearEncoder(), nn.Linear(D, DIM), Laplace(1, 0.75), (DIM,)) for n in names]


def model_of(aggregation, names=NAMES, **options):
    return SharedLatentVAE(modalities_of(names), D, aggregation, **options)


def per_sample_terms(model, batch, mode, hyper=None):
    """Per-sample reconstruction of each observed site and the rate at site ``z``, read from the programs' traces."""
    model_trace, guide_trace = run_pair(model.model, model.guide, (batch, hyper or {}), {})
    rec = {n[2:]: -log_prob(s) for n, s in model_trace.nodes.items() if s["type"] == "sample" and s["is_observed"]}
    q, p = guide_trace.nodes["z"], model_trace.nodes["z"]
    return rec, rate(q["fn"], p["fn"], mode, q["value"])


def batch_of(names=NAMES, mask=None):
    g = torch.Generator().manual_seed(1)
    return MultimodalBatch({n: torch.randn(B, DIM, generator=g) for n in names}, mask=mask)


def stats(model, batch):
    out = {}
    for n in batch.data:
        loc, lv = model.encoders[n](batch.data[n])
        out[n] = (loc, lv.exp())
    return out


def poe(parts, prior_expert=False):
    precision = sum(1.0 / var for _, var in parts) + (1.0 if prior_expert else 0.0)
    var = 1.0 / precision
    return var * sum(loc / v for loc, v in parts), var


def kl_to_std(loc, var):
    return 0.5 * (var + loc**2 - 1 - var.log()).sum(-1)


def laplace_nll(x, loc):
    return ((x - loc).abs() / 0.75 + math.log(1.5)).sum(-1)


def test_mmvm_reference_poe_baseline_formula():
    """loss = mean[Rec + β·M·KL(q_PoE ‖ N)], PoE without prior expert, one z for all decoders (§1.5)."""
    model, batch, beta = model_of("poe", rate_scale="modalities"), batch_of(), 0.3
    torch.manual_seed(7)
    out = ELBOObjective(RateELBO("analytic"))(model, batch, {"beta": beta})
    loc, var = poe(list(stats(model, batch).values()))
    torch.manual_seed(7)
    z = loc + var.sqrt() * dist.Normal(torch.zeros(B, D), torch.ones(B, D)).rsample()
    rec = sum(laplace_nll(batch.data[n], model.decoders[n](z)) for n in NAMES)
    expected = (rec + beta * 3 * kl_to_std(loc, var)).mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)


def test_avg_baseline_formula():
    model, batch = model_of("avg"), batch_of()
    q = model.joint(batch)
    parts = list(stats(model, batch).values())
    torch.testing.assert_close(q.base_dist.loc, sum(p[0] for p in parts) / 3)
    torch.testing.assert_close(q.base_dist.scale.pow(2), sum(p[1] for p in parts) / 3, rtol=1e-5, atol=1e-6)


def test_mopoe_subset_averaged_kl_with_prior_expert_in_full_subset():
    """MultiVae/MoPoE: KL = Σ_S 1/|S| KL(q_S ‖ N), prior expert in the full subset only (§5.3)."""
    model, batch = model_of("mopoe"), batch_of()
    rec, r = per_sample_terms(model, batch, "jensen")
    s = stats(model, batch)
    family = [c for k in (1, 2, 3) for c in itertools.combinations(NAMES, k)]
    expected = sum(kl_to_std(*poe([s[n] for n in c], prior_expert=len(c) == 3)) for c in family) / len(family)
    torch.testing.assert_close(r, expected, rtol=1e-5, atol=1e-5)


def test_moe_selected_component_kl_is_the_stratified_block_rule():
    """MMVM reference MoE: samples in block k use q_k, and the KL is that component's (§1.5)."""
    model, batch = model_of("moe"), batch_of()
    _, r = per_sample_terms(model, batch, "selected")
    s = stats(model, batch)
    blocks = [NAMES[b // (B // 3)] for b in range(B)]
    expected = torch.stack([kl_to_std(s[n][0][b], s[n][1][b]) for b, n in enumerate(blocks)])
    torch.testing.assert_close(r, expected, rtol=1e-5, atol=1e-6)


def test_analytic_rate_on_a_mixture_is_refused():
    model, batch = model_of("moe"), batch_of()
    with pytest.raises(ValueError, match="no closed-form KL"):
        ELBOObjective(RateELBO("analytic"))(model, batch, {})


def test_mvae_subsampled_objective_is_a_sum_of_subset_elbos():
    """MVAE: ELBO(x_a, x_b) + ELBO(x_a) + ELBO(x_b), PoE with prior expert, subsets reconstruct their own."""
    names = ("a", "b")
    model, batch = MVAE(modalities_of(names), D), batch_of(names)
    torch.manual_seed(3)
    out = ELBOObjective(RateELBO("analytic"))(model, batch, {"beta": 1.0})
    s = stats(model, batch)
    torch.manual_seed(3)
    expected = 0.0
    for subset in (names, ("a",), ("b",)):
        loc, var = poe([s[n] for n in subset], prior_expert=True)
        z = loc + var.sqrt() * dist.Normal(torch.zeros(B, D), torch.ones(B, D)).rsample()
        rec = sum(laplace_nll(batch.data[n], model.decoders[n](z)) for n in subset)
        expected = expected + (rec + kl_to_std(loc, var)).mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)


def test_mvae_random_subsets_have_sizes_two_to_m_minus_one():
    names = ["a", "b", "c", "d"]
    subsets = [subset for _, subset in MVAE(modalities_of(names), D, num_random_subsets=5).subsets(names)]
    assert subsets[:5] == [names, ["a"], ["b"], ["c"], ["d"]]
    assert len(subsets) == 10 and all(2 <= len(s) <= 3 for s in subsets[5:])


def test_mvtcae_formula():
    """((M−α)/M) Σ rec + β[(α/M) Σ_m KL(q ‖ q_m) + (1−α) KL(q ‖ N)], q = PoE without prior (§5.1)."""
    model, batch, alpha, beta = MVTCAE(modalities_of(), D, alpha=5 / 6), batch_of(), 5 / 6, 2.5
    torch.manual_seed(11)
    out = ELBOObjective(RateELBO("analytic"))(model, batch, {"beta": beta})
    s = stats(model, batch)
    loc, var = poe(list(s.values()))
    torch.manual_seed(11)
    z = loc + var.sqrt() * dist.Normal(torch.zeros(B, D), torch.ones(B, D)).rsample()
    rec = sum(laplace_nll(batch.data[n], model.decoders[n](z)) for n in NAMES)

    def kl(m0, v0, m1, v1):
        return 0.5 * (v1.log() - v0.log() + (v0 + (m0 - m1) ** 2) / v1 - 1).sum(-1)

    rate = alpha / 3 * sum(kl(loc, var, *s[n]) for n in NAMES) + (1 - alpha) * kl_to_std(loc, var)
    expected = ((3 - alpha) / 3 * rec + beta * rate).mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aggregation", ["avg", "poe", "poe_prior"])
def test_pyro_program_equals_shared_elbo_with_mc_rate(aggregation):
    model, batch = model_of(aggregation), batch_of()
    pyro.set_rng_seed(2)
    fast = ELBOObjective(RateELBO("mc"))(model, batch, {"beta": 0.5}).loss
    pyro.set_rng_seed(2)
    general = ELBOObjective(pyro.infer.Trace_ELBO())(model, batch, {"beta": 0.5}).loss
    torch.testing.assert_close(fast, general, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aggregation", ["avg", "poe", "moe", "mopoe"])
def test_all_true_mask_equals_no_mask(aggregation):
    model = model_of(aggregation)
    ones = {n: torch.ones(B, dtype=torch.bool) for n in NAMES}
    objective = ELBOObjective(RateELBO("mc"))
    torch.manual_seed(0)
    a = objective(model, batch_of(), {}).loss
    torch.manual_seed(0)
    b = objective(model, batch_of(mask=ones), {}).loss
    torch.testing.assert_close(a, b)


def test_masked_modality_leaves_the_product_and_the_likelihood():
    mask = {"a": torch.tensor([False] + [True] * (B - 1))}
    model, batch = model_of("poe"), batch_of(mask=mask)
    s = stats(model, batch)
    q = model.joint(batch)
    loc, var = poe([s["b"], s["c"]])
    torch.testing.assert_close(q.base_dist.loc[0], loc[0], rtol=1e-5, atol=1e-6)
    rec, _ = per_sample_terms(model, batch, "analytic")
    assert rec["a"][0] == 0 and rec["a"][1] != 0


def test_conditional_generation_from_any_subset():
    model, batch = model_of("mopoe"), batch_of()
    for size in (1, 2, 3):
        for subset in itertools.combinations(NAMES, size):
            z = model.infer(batch, subset).sample()
            assert z.shape == (B, D)
            assert model.decode("a", z).mean.shape == (B, DIM)
    with pytest.raises(KeyError, match="unknown modality 'q'"):
        model.infer(batch, ["a", "q"])
    with pytest.raises(ValueError, match="subset of modalities is empty"):
        model.infer(batch, [])


def test_unknown_aggregation_is_named():
    with pytest.raises(ValueError, match="unknown aggregation 'sum'"):
        model_of("sum")


def test_subset_elbo_ignores_samples_that_observe_none_of_the_subset():
    """MVAE's singleton ELBO({a}) on a batch where sample 0 misses a: that sample contributes zero."""
    mask = {"a": torch.tensor([False] + [True] * (B - 1))}
    model, batch = MVAE(modalities_of(), D, num_random_subsets=1), batch_of(mask=mask)
    model_trace, guide_trace = run_pair(model.model, model.guide, (batch, {}), {})
    rec = -log_prob(model_trace.nodes["x_a@a"])
    q, p = guide_trace.nodes["z@a"], model_trace.nodes["z@a"]
    r = torch.where(q["mask"], rate(q["fn"], p["fn"], "analytic"), 0.0)
    assert rec[0] == 0 and r[0] == 0 and bool((r[1:] > 0).all())
    torch.manual_seed(0)
    out = ELBOObjective(RateELBO("analytic"))(model, batch, {})
    assert torch.isfinite(out.loss)
