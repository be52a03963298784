"""Incomplete datasets: MCAR masking with keep probability η, complete-sample subsets, label-dependent masking."""
from __future__ import annotations

import math

import pytest
import torch

from pyromm.data import MultimodalDataset, complete_only, drop_by_label, drop_modalities

N = 4000
NAMES = ("m0", "m1", "m2", "m3", "m4")


def within_binomial(fraction: float, p: float, n: int) -> bool:
    """|fraction − p| within 4 binomial standard deviations."""
    return abs(fraction - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-12


@pytest.fixture(scope="module")
def dataset() -> MultimodalDataset:
    g = torch.Generator().manual_seed(0)
    data = {m: torch.randn(N, 2, generator=g) for m in NAMES}
    return MultimodalDataset(data, torch.arange(N) % 4, metadata={"dataset": "toy"})


def observed_fraction(dataset: MultimodalDataset, name: str) -> float:
    return float(dataset.mask[name].float().mean())


@pytest.mark.parametrize("eta", [0.8, 0.5])
def test_drop_modalities_keeps_each_later_modality_with_probability_eta_and_the_first_always(dataset, eta):
    dropped = drop_modalities(dataset, eta, seed=1)
    assert bool(dropped.mask["m0"].all())
    for name in NAMES[1:]:
        assert within_binomial(observed_fraction(dropped, name), eta, N), name
    for name in NAMES:
        assert dropped.data[name] is dataset.data[name]
    assert torch.equal(dropped.labels, dataset.labels) and dataset.mask is None
    assert dropped.metadata["dataset"] == "toy"
    assert dropped.metadata["missing"] == [
        {"mechanism": "MCAR", "keep_probability": {"m0": 1.0, **{m: eta for m in NAMES[1:]}}, "keep_first": True,
         "seed": 1}
    ]


def test_drop_modalities_is_seeded(dataset):
    first, second = drop_modalities(dataset, 0.5, seed=3), drop_modalities(dataset, 0.5, seed=3)
    other = drop_modalities(dataset, 0.5, seed=4)
    assert all(torch.equal(first.mask[m], second.mask[m]) for m in NAMES)
    assert not torch.equal(first.mask["m1"], other.mask["m1"])


def test_drop_modalities_per_modality_eta_and_the_edges(dataset):
    dropped = drop_modalities(dataset, {"m1": 0.2, "m2": 0.0, "m3": 1.0}, seed=0)
    assert within_binomial(observed_fraction(dropped, "m1"), 0.2, N)
    assert not bool(dropped.mask["m2"].any())
    assert all(bool(dropped.mask[m].all()) for m in ("m0", "m3", "m4"))


def test_complete_only_keeps_the_fully_observed_samples(dataset):
    eta = 0.8
    dropped = drop_modalities(dataset, eta, seed=2)
    complete = complete_only(dropped)
    observed_all = torch.stack(list(dropped.mask.values())).all(0)
    assert len(complete) == int(observed_all.sum())
    assert within_binomial(len(complete) / N, eta ** (len(NAMES) - 1), N)  # 60000 · 0.8⁴ = 24576 in MultiVae
    assert complete.mask is None
    assert torch.equal(complete.data["m3"], dataset.data["m3"][observed_all])
    assert torch.equal(complete.labels, dataset.labels[observed_all])
    assert len(complete_only(dataset)) == N


def test_drop_modalities_without_keep_first_restores_one_modality_of_empty_samples(dataset):
    eta, m = 0.5, len(NAMES)
    dropped = drop_modalities(dataset, eta, keep_first=False, seed=5)
    observed = torch.stack([dropped.mask[name] for name in NAMES])
    assert bool(observed.any(0).all())
    # Each modality: kept with probability η, or given back to a sample that lost all M, with 1/M each.
    expected = eta + (1 - eta) ** m / m
    for name in NAMES:
        assert within_binomial(observed_fraction(dropped, name), expected, N), name


def test_drop_modalities_keeps_earlier_masks_and_records_both(dataset):
    once = drop_modalities(dataset, 0.5, seed=0)
    twice = drop_modalities(once, 0.5, seed=1)
    for name in NAMES[1:]:
        assert not bool((twice.mask[name] & ~once.mask[name]).any())
        assert within_binomial(observed_fraction(twice, name), 0.25, N)
    assert [r["seed"] for r in twice.metadata["missing"]] == [0, 1]


@pytest.mark.parametrize("eta", [1.5, -0.1, float("nan"), {"m2": 2.0}])
def test_eta_outside_the_unit_interval_is_rejected(dataset, eta):
    with pytest.raises(ValueError, match="η"):
        drop_modalities(dataset, eta)


def test_drop_modalities_rejects_unknown_names_and_dropping_a_kept_first(dataset):
    with pytest.raises(KeyError, match="'zz'"):
        drop_modalities(dataset, {"zz": 0.5})
    with pytest.raises(ValueError, match="keep_first"):
        drop_modalities(dataset, {"m0": 0.5})
    assert within_binomial(observed_fraction(drop_modalities(dataset, {"m0": 0.5}, keep_first=False), "m0"), 0.5, N)


def test_drop_by_label_missing_probability_follows_the_label(dataset):
    probabilities = [0.1, 0.3, 0.5, 0.8]
    dropped = drop_by_label(dataset, "m2", probabilities, seed=0)
    for label, p in enumerate(probabilities):
        rows = dataset.labels == label
        missing = float((~dropped.mask["m2"][rows]).float().mean())
        assert within_binomial(missing, p, int(rows.sum())), label
    assert all(bool(dropped.mask[m].all()) for m in NAMES if m != "m2")
    assert dropped.metadata["missing"][-1]["probability_per_label"] == probabilities
    again = drop_by_label(dataset, "m2", probabilities, 0)
    assert torch.equal(again.mask["m2"], dropped.mask["m2"])


def test_drop_by_label_keeps_a_sample_s_only_observed_modality():
    data = {"a": torch.zeros(6, 1), "b": torch.zeros(6, 1)}
    only_b = torch.tensor([True, True, True, False, False, False])
    dataset = MultimodalDataset(data, torch.zeros(6, dtype=torch.long), mask={"a": ~only_b})
    dropped = drop_by_label(dataset, "b", [1.0])
    assert torch.equal(dropped.mask["b"], only_b) and torch.equal(dropped.mask["a"], ~only_b)


def test_drop_by_label_rejects_bad_arguments(dataset):
    with pytest.raises(KeyError, match="'zz'"):
        drop_by_label(dataset, "zz", [0.5] * 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        drop_by_label(dataset, "m1", [0.5, 1.2, 0.5, 0.5])
    with pytest.raises(ValueError, match="3 entries"):
        drop_by_label(dataset, "m1", [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="labels"):
        drop_by_label(MultimodalDataset({"a": torch.zeros(3, 1), "b": torch.zeros(3, 1)}), "a", [0.5])
