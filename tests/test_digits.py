"""The embedded multiview digits dataset."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from pyromm.data import MultimodalDataset, load_digits_multiview
from pyromm.data import digits
from pyromm.data.digits import _stratified_split


@pytest.fixture(scope="module")
def five_views() -> tuple[MultimodalDataset, MultimodalDataset]:
    return load_digits_multiview("train", num_views=5), load_digits_multiview("test", num_views=5)


def test_contract(five_views):
    train, test = five_views
    assert len(train) + len(test) == 1797
    for ds in (train, test):
        assert ds.modalities == ["m0", "m1", "m2", "m3", "m4"]
        assert ds.event_shapes == {m: (1, 8, 8) for m in ds.modalities}
        assert ds.labels.dtype == torch.int64
        for x in ds.data.values():
            assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    batch = next(train.batches(16))
    assert batch.data["m2"].shape == (16, 1, 8, 8)
    assert train.metadata["num_views"] == 5 and set(train.metadata["views"]) == set(train.modalities)


def test_deterministic_and_seeded(five_views):
    train, _ = five_views
    again = load_digits_multiview("train", num_views=5)
    other = load_digits_multiview("train", num_views=5, seed=1)
    assert all(torch.equal(train.data[m], again.data[m]) for m in train.modalities)
    assert torch.equal(train.labels, again.labels)
    assert not torch.equal(train.data["m0"], other.data["m0"])


def test_views_nest_and_split_is_independent_of_views(five_views):
    train, _ = five_views
    two = load_digits_multiview("train", num_views=2)
    assert two.modalities == ["m0", "m1"]
    assert torch.equal(two.labels, train.labels)
    assert torch.equal(two.data["m1"], train.data["m1"])


def test_stratified_split():
    labels = np.repeat(np.arange(10), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    split = _stratified_split(labels, seed=0, test_fraction=0.2)
    assert np.intersect1d(split["train"], split["test"]).size == 0
    assert np.union1d(split["train"], split["test"]).tolist() == list(range(labels.size))
    counts = np.bincount(labels[split["test"]], minlength=10)
    np.testing.assert_array_equal(counts, np.round(0.2 * np.bincount(labels)).astype(int))
    again = _stratified_split(labels, seed=0, test_fraction=0.2)
    np.testing.assert_array_equal(split["test"], again["test"])
    assert not np.array_equal(split["test"], _stratified_split(labels, seed=1, test_fraction=0.2)["test"])


def test_views_carry_the_label(five_views):
    train, test = five_views
    for m in train.modalities:
        x = train.data[m].reshape(len(train), -1)
        centroids = torch.stack([x[train.labels == c].mean(0) for c in range(10)])
        pred = torch.cdist(test.data[m].reshape(len(test), -1), centroids).argmin(1)
        assert (pred == test.labels).float().mean() > 0.75, f"view {m} does not carry the label"


def test_tuples_join_different_images_of_one_digit(monkeypatch):
    monkeypatch.setattr(digits, "_texture", lambda view, rng, n: np.zeros((n, 8, 8)))
    ds = load_digits_multiview("train", num_views=3)
    source = load_digits()
    lookup = {(img / 16.0).astype(np.float32).tobytes(): i for i, img in enumerate(source.images)}
    index = {}
    for m, x in ds.data.items():
        images = (1.0 - x) if m == "m1" else x
        index[m] = np.array([lookup[img.numpy().tobytes()] for img in images[:, 0]])
        np.testing.assert_array_equal(source.target[index[m]], ds.labels.numpy())
        assert len(set(index[m])) == len(ds)
    assert np.mean(index["m0"] == index["m2"]) < 0.05


def test_nuisance_textures():
    rng = np.random.default_rng(0)
    textures = [digits._texture(m, rng, 200) for m in range(5)]
    for t in textures:
        assert t.shape == (200, 8, 8) and t.min() >= 0.0 and t.max() <= 1.0
        assert t.std(0).mean() > 0.1, "texture does not vary between samples"
    patterns = {np.round(np.abs(np.fft.fft2(t)).mean(0), 1).tobytes() for t in textures}
    assert len(patterns) == 5


def test_contrast_inversion(five_views):
    means = {m: float(x.mean()) for m, x in five_views[0].data.items()}
    assert means["m1"] > 0.5 > means["m0"]


@pytest.mark.parametrize("kwargs", [{"num_views": 0}, {"num_views": 6}, {"split": "val"}, {"test_fraction": 1.0}])
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        load_digits_multiview(**kwargs)
