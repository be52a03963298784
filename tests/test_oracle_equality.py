"""The trace-based ELBOs on the models' own programs equal the hand-written objectives they replaced
(tests/oracles.py), in loss and every gradient, under the same random draws: MMVM and the independent VAEs per
rate mode, the shared-latent baselines per rate mode (rate × M included), MVAE, MVTCAE, IWAE and DReG, with and
without missing modalities. (MMVAE, MMVAE+, JMVAE, TELBO and JNF: tests/test_mmvae*.py, test_jmvae_telbo.py,
test_jnf.py.)"""
import pytest
import torch
from torch import nn

import oracles
from pyromm.data import MultimodalBatch
from pyromm.infer import DReG, IWAE, RateELBO
from pyromm.likelihoods import Laplace
from pyromm.models import MVAE, MVTCAE, Modality, SharedLatentVAE, independent_vaes, mmvm_vae

B, D, X = 12, 3, 5
NAMES = ("a", "b", "c")


class LinearEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(X, 2 * D)

    def forward(self, x):
        return self.net(x).chunk(2, -1)


def modalities(names=NAMES):
    torch.manual_seed(0)
    return [
        Modality(n, LinearEncoder(), nn.Linear(D, X), Laplace(1, 0.75), (X,), weight=w)
        for n, w in zip(names, (1.0, 2.0, 0.5, 1.5))
    ]


def batch(masked: bool, names=NAMES):
    g = torch.Generator().manual_seed(1)
    data = {n: torch.randn(B, X, generator=g, dtype=torch.float64) for n in names}
    mask = None
    if masked:
        mask = {"b": torch.tensor([True, False] * (B // 2)), "c": torch.tensor([False, True, True] * (B // 3))}
    return MultimodalBatch(data, mask=mask)


def assert_equal_to_oracle(model, oracle, elbo, b, hyper):
    model = model.double()
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(7)
    out = oracle(model, b, hyper)
    expected = torch.autograd.grad(out.loss, params, allow_unused=True)
    torch.manual_seed(7)
    loss, _ = elbo.loss_and_terms(model.model, model.guide, b, hyper)
    got = torch.autograd.grad(loss / b.batch_size, params, allow_unused=True)
    torch.testing.assert_close(loss / b.batch_size, out.loss, rtol=1e-12, atol=1e-12)
    for want, have in zip(expected, got):
        if want is None or have is None:
            assert want is None and have is None or (want if have is None else have).abs().max() == 0
            continue
        torch.testing.assert_close(have, want, rtol=1e-10, atol=1e-10)


HYPER = {"beta": 1.7, "alpha": 0.3}


@pytest.mark.parametrize("masked", [False, True], ids=["complete", "masked"])
@pytest.mark.parametrize("rate", ["jensen", "mc"])
def test_mmvm(rate, masked):
    assert_equal_to_oracle(
        mmvm_vae(modalities(), D, alpha=0.3), oracles.MultimodalELBO(rate), RateELBO(rate), batch(masked), HYPER
    )


@pytest.mark.parametrize("masked", [False, True], ids=["complete", "masked"])
@pytest.mark.parametrize("rate", ["analytic", "jensen", "mc"])
def test_independent_vaes(rate, masked):
    assert_equal_to_oracle(
        independent_vaes(modalities(), D), oracles.MultimodalELBO(rate), RateELBO(rate), batch(masked), HYPER
    )


SHARED = [
    ("avg", "analytic", "modalities"),
    ("poe", "analytic", "modalities"),
    ("poe", "mc", 1.0),
    ("moe", "selected", "modalities"),
    ("moe", "mc", 1.0),
    ("mopoe_noprior", "selected", "modalities"),
    ("mopoe", "jensen", 1.0),
    ("mopoe", "mc", 1.0),
]


@pytest.mark.parametrize("masked", [False, True], ids=["complete", "masked"])
@pytest.mark.parametrize("aggregation, rate, scale", SHARED, ids=[f"{a}-{r}-{s}" for a, r, s in SHARED])
def test_shared_latent_baselines(aggregation, rate, scale, masked):
    model = SharedLatentVAE(modalities(), D, aggregation, rate_scale=scale)
    oracle = oracles.SharedELBO(rate, rate_scale=scale)
    assert_equal_to_oracle(model, oracle, RateELBO(rate), batch(masked), HYPER)


@pytest.mark.parametrize("masked", [False, True], ids=["complete", "masked"])
@pytest.mark.parametrize("k", [0, 2])
def test_mvae_subsampled_objective(k, masked):
    names = NAMES + ("d",)
    model = MVAE(modalities(names), D, num_random_subsets=k)
    oracle = oracles.SubsampledELBO(oracles.SharedELBO("analytic"), num_random_subsets=k)
    assert_equal_to_oracle(model, oracle, RateELBO("analytic"), batch(masked, names), HYPER)


@pytest.mark.parametrize("masked", [False, True], ids=["complete", "masked"])
def test_mvtcae(masked):
    assert_equal_to_oracle(
        MVTCAE(modalities(), D, alpha=0.4), oracles.MVTCAEObjective(0.4), RateELBO("analytic"), batch(masked), HYPER
    )


@pytest.mark.parametrize("masked", [False, True], ids=["complete", "masked"])
@pytest.mark.parametrize("ours, oracle", [(IWAE, oracles.IWAE), (DReG, oracles.DReG)], ids=["iwae", "dreg"])
def test_importance_weighted_bounds(ours, oracle, masked):
    model = SharedLatentVAE(modalities(), D, "poe")
    assert_equal_to_oracle(model, oracle(5), ours(num_particles=5), batch(masked), HYPER)
