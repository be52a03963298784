"""Subset coherence, joint coherence, importance-sampled likelihood and k-means accuracy on fake models with
known answers."""
from __future__ import annotations

import json
import math
from typing import Callable

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from torch import Tensor, nn

from pyromm.data import LinearGaussianMultimodal, MultimodalBatch, MultimodalDataset
from pyromm.evaluation import coherence_by_num_inputs, joint_coherence, joint_log_likelihood, kmeans_accuracy
from pyromm.evaluation.clustering import matched_accuracy
from pyromm.likelihoods import Laplace
from pyromm.models import Modality, SharedLatentVAE, mmvm_vae

K = 4  # classes
NAMES = ("a", "b", "c")
CLASSIFIERS = {m: nn.Identity() for m in NAMES}  # logits = the data: predicts argmax x


def onehot(x: Tensor) -> Tensor:
    return nn.functional.one_hot(x.argmax(-1), K).float()


class SubsetFake(nn.Module):
    """q(z | X_S) = point mass (or Normal of ``posterior_scale``) at Σ_{m∈S observed} onehot(argmax x_m);
    p(x_m | z) = Normal(dec_m(z), 0.1), dec_m = identity unless given."""

    def __init__(self, decoders: dict[str, Callable[[Tensor], Tensor]] | None = None, posterior_scale: float = 0.0):
        super().__init__()
        self.modality_names = list(NAMES)
        self.decoders = decoders or {}
        self.posterior_scale = posterior_scale
        self.offset = nn.Parameter(torch.zeros(()))
        self.infer_calls: list[tuple[list[str], list[str], bool]] = []

    def _posterior(self, loc: Tensor) -> dist.TorchDistribution:
        if self.posterior_scale == 0:
            return dist.Delta(loc, event_dim=1)
        return dist.Normal(loc, self.posterior_scale).to_event(1)

    def encode(self, batch: MultimodalBatch) -> dict[str, dist.TorchDistribution]:
        return {m: self._posterior(onehot(x)) for m, x in batch.data.items()}

    def infer(self, batch: MultimodalBatch, subset: list[str]) -> dist.TorchDistribution:
        self.infer_calls.append((list(subset), batch.modalities, batch.mask is not None))
        locs = []
        for name in subset:
            keep = batch.observed(name)
            loc = onehot(batch.data[name])
            locs.append(loc if keep is None else loc * keep[:, None])
        return self._posterior(torch.stack(locs).sum(0))

    def decode(self, name: str, z: Tensor) -> dist.TorchDistribution:
        return dist.Normal(self.decoders.get(name, lambda v: v)(z), 0.1).to_event(1)


class PriorFake(SubsetFake):
    """The same with an unconditional prior z ~ N(0, I_K)."""

    def sample_prior(self, n: int) -> Tensor:
        return torch.randn(n, K)


def constant_class(label: int) -> Callable[[Tensor], Tensor]:
    return lambda z: nn.functional.one_hot(torch.full(z.shape[:-1], label), K).float()


def subset_dataset(n: int, seed: int) -> MultimodalDataset:
    """One-hot label + noise per modality; "b" and "c" masked at random, their masked entries showing a WRONG label."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(K, (n,), generator=g)
    data = {m: nn.functional.one_hot(labels, K).float() + 0.1 * torch.rand(n, K, generator=g) for m in NAMES}
    mask = {"b": torch.rand(n, generator=g) < 0.7, "c": torch.rand(n, generator=g) < 0.6}
    for name, observed in mask.items():
        data[name][~observed] = nn.functional.one_hot((labels[~observed] + 1) % K, K).float()
    return MultimodalDataset(data, labels, mask)


def test_coherence_by_num_inputs_of_a_perfect_model_is_one_and_conditions_on_observed_rows_only():
    test = subset_dataset(300, seed=0)
    model = SubsetFake()
    result = coherence_by_num_inputs(model, test, CLASSIFIERS, batch_size=64)
    expected_keys = {"a->b", "a->c", "b->a", "b->c", "c->a", "c->b", "a+b->c", "a+c->b", "b+c->a"}
    assert set(result["subset"]) == expected_keys
    assert all(v == 1.0 for v in result["subset"].values())
    assert result["by_num_inputs"] == {"1": 1.0, "2": 1.0}
    assert all(modalities == subset and not masked for subset, modalities, masked in model.infer_calls)
    json.dumps(result, allow_nan=False)


def test_coherence_by_num_inputs_with_a_constant_target_decoder_matches_hand_counts():
    test = subset_dataset(300, seed=1)
    result = coherence_by_num_inputs(SubsetFake({"c": constant_class(0)}), test, CLASSIFIERS, batch_size=64)
    is_zero, b_observed = (test.labels == 0).float(), test.mask["b"]
    p_all, p_b = float(is_zero.mean()), float(is_zero[b_observed].mean())
    expected = {"a->c": p_all, "b->c": p_b, "a+b->c": p_b}
    for key, value in result["subset"].items():
        assert value == pytest.approx(expected.get(key, 1.0)), key
    assert result["by_num_inputs"]["1"] == pytest.approx((4 + p_all + p_b) / 6)
    assert result["by_num_inputs"]["2"] == pytest.approx((2 + p_b) / 3)


def test_coherence_by_num_inputs_generator_is_reproducible_and_leaves_global_rng_alone():
    test = subset_dataset(200, seed=2)
    model = SubsetFake(posterior_scale=1.0)
    state = torch.get_rng_state()
    first = coherence_by_num_inputs(model, test, CLASSIFIERS, generator=torch.Generator().manual_seed(3))
    second = coherence_by_num_inputs(model, test, CLASSIFIERS, generator=torch.Generator().manual_seed(3))
    assert first == second and first["by_num_inputs"]["1"] < 1.0
    assert torch.equal(state, torch.get_rng_state())
    with pytest.raises(KeyError, match="'c'"):
        coherence_by_num_inputs(model, test, {"a": nn.Identity(), "b": nn.Identity()})


def test_joint_coherence_is_one_for_constant_decoders_and_the_agreement_rate_otherwise():
    constant = PriorFake({m: constant_class(2) for m in NAMES})
    assert joint_coherence(constant, CLASSIFIERS, 500, batch_size=128) == 1.0
    # "a" predicts argmax z (uniform over K classes), "b" and "c" always class 0: agreement iff argmax z = 0.
    half = PriorFake({"b": constant_class(0), "c": constant_class(0)})
    n = 4000
    rate = joint_coherence(half, CLASSIFIERS, n, batch_size=1000, generator=torch.Generator().manual_seed(0))
    assert abs(rate - 1 / K) < 4 * math.sqrt(0.25 * 0.75 / n)
    again = joint_coherence(half, CLASSIFIERS, n, batch_size=1000, generator=torch.Generator().manual_seed(0))
    assert rate == again
    assert joint_coherence(SubsetFake(), CLASSIFIERS, 10) is None


class LinearGaussianFake(nn.Module):
    """The contract for the linear-Gaussian model: exact p(z), p(x_m | z) and, with scale = 1 and shift = 0,
    the exact posterior p(z | X_O) per sample (O = observed modalities); otherwise N(μ + shift, scale² Σ)."""

    def __init__(self, truth: LinearGaussianMultimodal, scale: float = 1.0, shift: float = 0.0) -> None:
        super().__init__()
        self.truth, self.scale, self.shift = truth, scale, shift
        self.modality_names = truth.modality_names

    def prior(self, batch: MultimodalBatch) -> dist.TorchDistribution:
        zeros = torch.zeros(batch.batch_size, self.truth.latent_dim, dtype=torch.float64)
        return dist.Normal(zeros, 1.0).to_event(1)

    def infer(self, batch: MultimodalBatch, subset: list[str]) -> dist.TorchDistribution:
        observed = observed_matrix(batch, subset)
        d = self.truth.latent_dim
        loc = torch.empty(batch.batch_size, d, dtype=torch.float64)
        cov = torch.empty(batch.batch_size, d, d, dtype=torch.float64)
        for pattern in observed.unique(dim=0):
            rows = (observed == pattern).all(1)
            names = [m for m, o in zip(subset, pattern) if o]
            mean, covariance = self.truth.posterior({m: batch.data[m][rows] for m in names}, names)
            loc[rows], cov[rows] = mean + self.shift, covariance * self.scale**2
        return dist.MultivariateNormal(loc, cov)

    def decode(self, name: str, z: Tensor) -> dist.TorchDistribution:
        mean = z @ self.truth.weights[name].T + self.truth.biases[name]
        return dist.Normal(mean, self.truth.noise[name]).to_event(1)


def observed_matrix(batch: MultimodalBatch, names: list[str]) -> Tensor:
    ones = torch.ones(batch.batch_size, dtype=torch.bool)
    return torch.stack([ones if batch.observed(m) is None else batch.observed(m) for m in names], 1)


@pytest.fixture(scope="module")
def linear_gaussian() -> tuple[LinearGaussianMultimodal, MultimodalDataset, float]:
    """The model, 200 test samples with "b" missing for a quarter of them, and the exact mean log p(X_O)."""
    truth = LinearGaussianMultimodal(3, {"a": 4, "b": 5}, noise={"a": 0.5, "b": 0.8}, seed=0)
    full = truth.sample(200, generator=torch.Generator().manual_seed(1))
    observed = torch.arange(200) % 4 != 0
    test = MultimodalDataset(full.data, torch.zeros(200, dtype=torch.long), mask={"b": observed})
    exact = torch.cat([
        truth.log_marginal({m: x[observed] for m, x in full.data.items()}),
        truth.log_marginal({"a": full.data["a"][~observed]}),
    ])
    return truth, test, float(exact.mean())


def test_importance_sampled_likelihood_with_the_exact_posterior_is_exact(linear_gaussian):
    truth, test, exact = linear_gaussian
    estimate = joint_log_likelihood(LinearGaussianFake(truth), test, num_samples=7, samples_per_chunk=3, batch_size=64)
    assert estimate == pytest.approx(exact, abs=1e-6)


def test_importance_sampled_likelihood_with_an_inexact_posterior_rises_towards_the_exact_value(linear_gaussian):
    truth, test, exact = linear_gaussian
    model = LinearGaussianFake(truth, scale=0.8, shift=0.3)  # too narrow and shifted: a slow-converging proposal
    estimates = [
        joint_log_likelihood(model, test, num_samples=k, generator=torch.Generator().manual_seed(0))
        for k in (1, 10, 100, 1000)
    ]
    assert estimates[0] < estimates[1] < estimates[2] < estimates[3] < exact
    assert exact - estimates[3] < 0.05 * (exact - estimates[0])


class LinearEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(x).chunk(2, -1)


def real_models() -> tuple[SharedLatentVAE, nn.Module, MultimodalDataset]:
    torch.manual_seed(0)

    def modalities() -> list[Modality]:
        return [Modality(m, LinearEncoder(), nn.Linear(2, 4), Laplace(1, 0.75), (4,)) for m in ("x", "y")]

    data = MultimodalDataset({m: torch.randn(30, 4) for m in ("x", "y")}, torch.arange(30) % 3)
    return SharedLatentVAE(modalities(), 2, "mopoe"), mmvm_vae(modalities(), 2), data


def test_likelihood_runs_on_shared_latent_models_and_is_none_without_a_batch_prior():
    shared, mmvm, data = real_models()
    estimate = joint_log_likelihood(shared, data, num_samples=20, batch_size=8)
    assert estimate is not None and math.isfinite(estimate)
    assert joint_log_likelihood(mmvm, data) is None
    assert joint_coherence(mmvm, {m: nn.Identity() for m in ("x", "y")}, 10) is None


class ClusterFake(nn.Module):
    """q_m(z | x_m) = N(x_m, I): the latent means are the data themselves."""

    def __init__(self) -> None:
        super().__init__()
        self.modality_names = ["a", "b"]

    def encode(self, batch: MultimodalBatch) -> dict[str, dist.TorchDistribution]:
        return {m: dist.Normal(batch.data[m], 1.0).to_event(1) for m in batch.data}


def test_kmeans_accuracy_matches_permuted_clusters_and_uses_observed_samples_only():
    g = torch.Generator().manual_seed(0)
    n = 240
    labels = torch.arange(n) % K
    centres = 10.0 * torch.randn(K, 3, generator=g)
    permutation = torch.tensor([2, 0, 3, 1])
    a = centres[permutation[labels]] + 0.1 * torch.randn(n, 3, generator=g)
    b = torch.randn(n, 3, generator=g)
    observed = torch.arange(n) % 3 != 0
    a[~observed] = centres[permutation[(labels[~observed] + 1) % K]]  # masked rows sit in the WRONG cluster
    test = MultimodalDataset({"a": a, "b": b}, labels, mask={"a": observed})
    result = kmeans_accuracy(ClusterFake(), test)
    assert result["a"] == 1.0 and result["b"] < 0.6
    assert kmeans_accuracy(ClusterFake(), test, modality="a", num_clusters=K, seed=1) == {"a": 1.0}
    with pytest.raises(KeyError, match="'z'"):
        kmeans_accuracy(ClusterFake(), test, modality="z")


def test_matched_accuracy_hand_count():
    clusters = np.array([0, 0, 1, 1, 2, 2])
    labels = np.array([7, 7, 5, 5, 5, 9])
    assert matched_accuracy(clusters, labels) == pytest.approx(5 / 6)  # 0→7, 1→5, 2→9
    assert matched_accuracy(np.zeros(4, dtype=int), np.array([0, 0, 1, 2])) == 0.5  # one cluster, one match
