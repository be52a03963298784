"""JNF toy dataset: determinism, shapes and dtypes, shared fill class and independent sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pyromm.data.shapes import MAX_WIDTH, MIN_WIDTH, SPLIT_SIZES, is_full, load_shapes, render, shape_width


@pytest.fixture(scope="module")
def pairs():
    return load_shapes("train", seed=0, limit=2000)


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (load_shapes("test", seed=s, limit=300) for s in (0, 0, 1))
    for name in ("square", "circle"):
        assert torch.equal(a.data[name], b.data[name])
        assert not torch.equal(a.data[name], c.data[name])
    assert torch.equal(a.labels, b.labels)


def test_limit_is_a_prefix_and_splits_differ():
    small, large = load_shapes("train", limit=50), load_shapes("train", limit=9000)
    assert torch.equal(small.data["circle"], large.data["circle"][:50])
    assert not torch.equal(load_shapes("test", limit=50).data["circle"], small.data["circle"])


def test_shapes_dtypes_and_values(pairs):
    assert pairs.modalities == ["square", "circle"]
    assert pairs.event_shapes == {"square": (1, 32, 32), "circle": (1, 32, 32)}
    for x in pairs.data.values():
        assert x.dtype == torch.uint8 and set(x.unique().tolist()) == {0, 255}
    assert pairs.labels.dtype == torch.int64 and set(pairs.labels.tolist()) == {0, 1}
    assert abs(float(pairs.labels.float().mean()) - 0.5) < 0.05
    batch = pairs.batch(slice(0, 4))
    assert batch.data["square"].dtype == torch.float32 and float(batch.data["square"].max()) == 1.0


def test_full_or_empty_is_shared_and_sizes_are_independent(pairs):
    batch = pairs.batch(slice(None))
    for name in ("square", "circle"):
        assert torch.equal(is_full(batch.data[name]).long(), batch.labels)
    widths = {name: shape_width(batch.data[name]).double() for name in ("square", "circle")}
    for w in widths.values():
        assert MIN_WIDTH <= float(w.min()) and float(w.max()) <= MAX_WIDTH + 1
        assert float(w.std()) > 4.0
    correlation = np.corrcoef(widths["square"].numpy(), widths["circle"].numpy())[0, 1]
    assert abs(correlation) < 0.1  # about 4.5 standard errors of r for 2,000 independent pairs


def test_render_draws_outlines_and_filled_shapes():
    full, empty = render("square", np.array([20.0, 20.0]), np.array([True, False]))
    assert int((full > 0).sum()) == 20 * 20
    assert int((empty > 0).sum()) == 20 * 20 - 16 * 16
    circle = render("circle", np.array([28.0]), np.array([True]))[0, 0] > 0
    assert abs(int(circle.sum()) - np.pi * 14**2) < 30
    with pytest.raises(ValueError, match="kind"):
        render("triangle", np.array([20.0]), np.array([True]))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="split"):
        load_shapes("val")
    with pytest.raises(ValueError, match="limit"):
        load_shapes("test", limit=0)
    assert len(load_shapes("test", limit=10**9)) == SPLIT_SIZES["test"]
