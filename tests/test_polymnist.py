"""PolyMNIST generation: recipe, determinism, translated variant, metadata and caching."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pyromm.data.polymnist as polymnist
from pyromm.data.polymnist import (
    generate_polymnist,
    load_polymnist,
    pair_within_classes,
    polymnist_cache_dir,
    polymnist_metadata,
    shrink_digits,
)

MNIST_TEST = ("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz")
BACKGROUNDS = tuple(f"polymnist_backgrounds/{name}" for name, _ in polymnist.BACKGROUNDS)


def _fake_mnist(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.permutation(np.arange(n) % 10).astype(np.int64)
    return images, labels


@pytest.fixture
def fake_sources(monkeypatch):
    """Small random MNIST and small random backgrounds (black ones with ``black=True``), no files needed."""
    state = {"mnist": _fake_mnist(), "black": False}

    def fake_mnist(root, split):
        return state["mnist"]

    def fake_background(root, view):
        shape = (40 + 3 * view, 50 + 5 * view, 3)
        if state["black"]:
            return np.zeros(shape, dtype=np.uint8)
        return np.random.default_rng(100 + view).integers(0, 256, shape, dtype=np.uint8)

    monkeypatch.setattr(polymnist, "load_mnist", fake_mnist)
    monkeypatch.setattr(polymnist, "load_background", fake_background)
    return state


def _reference(images, labels, backgrounds, seed, translated):
    """The README recipe written with plain loops, pixel by pixel in [0, 1]."""
    rng = np.random.Generator(np.random.PCG64(seed))
    n = labels.shape[0]
    shrunk = shrink_digits(images)
    views = []
    for background in backgrounds:
        source = np.empty(n, dtype=np.int64)
        for c in range(10):
            members = np.flatnonzero(labels == c)
            source[members] = members[rng.permutation(len(members))]
        if translated:
            shift_r, shift_c = rng.integers(0, 7, n), rng.integers(0, 7, n)
        crop_r = rng.integers(0, background.shape[0] - 27, n)
        crop_c = rng.integers(0, background.shape[1] - 27, n)
        out = np.empty((n, 28, 28, 3))
        for t in range(n):
            if translated:
                digit = np.zeros((28, 28), dtype=np.uint8)
                digit[shift_r[t] : shift_r[t] + 21, shift_c[t] : shift_c[t] + 21] = shrunk[source[t]]
            else:
                digit = images[source[t]]
            crop = background[crop_r[t] : crop_r[t] + 28, crop_c[t] : crop_c[t] + 28] / 255.0
            out[t] = np.where((digit > 128)[:, :, None], 1.0 - crop, crop)
        views.append(out)
    return views


@pytest.mark.parametrize("translated", [False, True])
def test_matches_recipe(fake_sources, translated):
    images, labels = fake_sources["mnist"]
    views, out_labels = generate_polymnist(num_views=3, translated=translated, seed=5)
    backgrounds = [polymnist.load_background(None, m) for m in range(3)]
    expected = _reference(images, labels, backgrounds, 5, translated)
    np.testing.assert_array_equal(out_labels, labels)
    for view, ref in zip(views, expected):
        assert view.dtype == np.uint8 and view.shape == (120, 3, 28, 28)
        np.testing.assert_allclose(view.transpose(0, 2, 3, 1) / 255.0, ref, atol=1e-12)


def test_tuples_share_labels_and_use_every_image_once(fake_sources):
    fake_sources["black"] = True
    images, labels = fake_sources["mnist"]
    views, out_labels = generate_polymnist(num_views=4, seed=1)
    ink_of_image = {(images[i] > 128).tobytes(): i for i in range(len(images))}
    for view in views:
        ink = view[:, 0] == 255
        assert np.array_equal(ink[:, None].repeat(3, 1), view == 255)
        source = np.array([ink_of_image[ink[t].tobytes()] for t in range(len(view))])
        np.testing.assert_array_equal(labels[source], out_labels)
        assert sorted(source) == list(range(len(images)))


def test_translated_digit_fits_its_window(fake_sources):
    fake_sources["black"] = True
    images, _ = fake_sources["mnist"]
    views, _ = generate_polymnist(num_views=2, translated=True, seed=2)
    shrunk_ink = {(d > 128).tobytes() for d in shrink_digits(images)}
    for view in views:
        ink = view[:, 0] == 255
        for t in range(len(view)):
            found = [
                (r, c)
                for r in range(7)
                for c in range(7)
                if not ink[t].sum() - ink[t, r : r + 21, c : c + 21].sum()
                and ink[t, r : r + 21, c : c + 21].tobytes() in shrunk_ink
            ]
            assert found, f"tuple {t}: ink is not a shrunk digit pasted at an offset in 0..6"


def test_limit_is_prefix_and_views_nest(fake_sources):
    full, labels = generate_polymnist(num_views=3, seed=3)
    part, part_labels = generate_polymnist(num_views=2, seed=3, limit=50)
    np.testing.assert_array_equal(part_labels, labels[:50])
    for a, b in zip(part, full):
        np.testing.assert_array_equal(a, b[:50])
    other, _ = generate_polymnist(num_views=3, seed=4)
    assert not np.array_equal(other[0], full[0])


def test_pair_within_classes():
    labels = np.random.default_rng(0).integers(0, 10, 300)
    source = pair_within_classes(np.random.default_rng(1), labels)
    np.testing.assert_array_equal(labels[source], labels)
    assert sorted(source) == list(range(300))


def test_shrink_matches_torch_bilinear():
    images = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    torch_out = F.interpolate(torch.from_numpy(images).double()[:, None], size=(21, 21), mode="bilinear",
                              align_corners=False, antialias=False)[:, 0].numpy()
    ours = shrink_digits(images).astype(np.float64)
    assert np.abs(ours - torch_out).max() <= 0.5 + 1e-9


@pytest.mark.parametrize("num_views", [0, 6, 2.0])
def test_rejects_bad_num_views(num_views, tmp_path):
    with pytest.raises(ValueError, match="num_views"):
        generate_polymnist(root=tmp_path, num_views=num_views)
    with pytest.raises(ValueError, match="num_views"):
        load_polymnist(root=tmp_path, num_views=num_views)


def test_missing_background_is_named(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        generate_polymnist(root=tmp_path, num_views=1, limit=2)
    message = str(info.value)
    assert str(tmp_path / "polymnist_backgrounds" / "original" / "1.jpg") in message
    assert "github.com/thomassutter/MoPoE" in message


def test_metadata_contents():
    meta = polymnist_metadata(num_views=3, translated=True, seed=7)
    assert meta["seed"] == 7 and meta["num_views"] == 3 and meta["variant"] == "translated_polymnist"
    assert meta["views"]["m1"] == {
        "background": "polymnist_backgrounds/extended/09road-3186188_1280.jpg",
        "md5": "63866992eee1e34867e01bcd5f3e0ae9",
    }
    assert meta["views"]["m0"]["md5"] == "4b090d72bb9a284ecb253e42ce176437"
    assert set(meta["views"]) == {"m0", "m1", "m2"}
    assert any("09road" in d and "m1" in d for d in meta["deviations"])
    assert meta["mnist_md5"]["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert len(meta["mnist_md5"]) == 4
    assert json.loads(json.dumps(meta)) == meta
    assert polymnist_metadata(num_views=1)["deviations"] == []


def test_load_caches_round_trip(fake_sources, tmp_path, monkeypatch):
    ds = load_polymnist(root=tmp_path, split="test", num_views=2, seed=9)
    directory = polymnist_cache_dir(tmp_path, 2, False, 9)
    assert directory == tmp_path / "polymnist" / "polymnist_2views_seed9"
    assert sorted(p.name for p in directory.iterdir()) == ["metadata.json", "test_labels.npy", "test_m0.npy", "test_m1.npy"]
    assert json.loads((directory / "metadata.json").read_text()) == polymnist_metadata(2, False, 9)
    assert ds.modalities == ["m0", "m1"] and len(ds) == 120
    assert ds.event_shapes == {"m0": (3, 28, 28), "m1": (3, 28, 28)}
    assert ds.data["m0"].dtype == torch.uint8 and ds.labels.dtype == torch.int64
    assert ds.metadata["split"] == "test" and ds.metadata["seed"] == 9

    def no_generation(*args, **kwargs):
        raise AssertionError("generated although the cache holds the data")

    monkeypatch.setattr(polymnist, "generate_polymnist", no_generation)
    again = load_polymnist(root=tmp_path, split="test", num_views=2, seed=9)
    for m in ds.modalities:
        assert torch.equal(again.data[m], ds.data[m])
    assert torch.equal(again.labels, ds.labels)
    head = load_polymnist(root=tmp_path, split="test", num_views=2, seed=9, limit=7)
    assert torch.equal(head.data["m1"], ds.data["m1"][:7])


def test_limited_load_is_not_cached(fake_sources, tmp_path):
    ds = load_polymnist(root=tmp_path, num_views=1, limit=10)
    assert len(ds) == 10
    assert not (tmp_path / "polymnist").exists()


def test_unwritable_cache_warns(fake_sources, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="could not cache"):
        ds = load_polymnist(root=tmp_path, num_views=1, cache_dir=blocker)
    assert len(ds) == 120


def test_real_data_deterministic(require_shared_file):
    root = require_shared_file(*MNIST_TEST, *BACKGROUNDS)
    a, labels_a = generate_polymnist(root, num_views=5, seed=0, split="test", limit=16)
    b, labels_b = generate_polymnist(root, num_views=5, seed=0, split="test", limit=16)
    c, _ = generate_polymnist(root, num_views=5, seed=1, split="test", limit=16)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    assert all(x.tobytes() != z.tobytes() for x, z in zip(a, c))
    assert np.array_equal(labels_a, labels_b) and labels_a.dtype == np.int64
    assert labels_a.tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6, 9, 0, 1, 5]
    assert all(x.shape == (16, 3, 28, 28) and x.dtype == np.uint8 for x in a)


def test_real_data_translated_and_load(require_shared_file, tmp_path):
    root = require_shared_file(*MNIST_TEST, *BACKGROUNDS[:2])
    plain, _ = generate_polymnist(root, num_views=2, split="test", limit=8)
    moved, _ = generate_polymnist(root, num_views=2, translated=True, split="test", limit=8)
    assert moved[0].shape == (8, 3, 28, 28) and not np.array_equal(plain[0], moved[0])
    ds = load_polymnist(root, split="test", num_views=2, translated=True, limit=8, cache_dir=tmp_path)
    assert torch.equal(ds.data["m1"], torch.from_numpy(moved[1]))
    assert ds.metadata["dataset"] == "Translated PolyMNIST"
    assert not (tmp_path / "polymnist").exists()


def test_object_array_in_the_cache_is_named_and_the_split_regenerated(fake_sources, tmp_path):
    ds = load_polymnist(root=tmp_path, split="test", num_views=1, seed=9)
    directory = polymnist_cache_dir(tmp_path, 1, False, 9)
    bad = directory / "test_m0.npy"
    np.save(bad, np.array([{"x": 1}] * 3, dtype=object), allow_pickle=True)
    with pytest.warns(UserWarning) as caught:
        again = load_polymnist(root=tmp_path, split="test", num_views=1, seed=9)
    assert [str(w.message) for w in caught] == [
        f"PolyMNIST cache in {directory} cannot be read ({bad}: Object arrays cannot be loaded when "
        "allow_pickle=False); generating the 'test' split again"
    ]
    assert torch.equal(again.data["m0"], ds.data["m0"])
    assert np.load(bad, allow_pickle=False).dtype == np.uint8  # rewritten
