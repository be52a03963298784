"""Figures: human labels saying which direction is better, titles, the chance line, one latent panel per
modality, gaps in generation grids, training curves, atomic writes."""
from __future__ import annotations

import json
import stat

import matplotlib
import numpy as np
import pyro.distributions as dist
import pytest
import torch
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from torch import nn

from pyromm import sweep
from pyromm.data.batch import MultimodalBatch
from pyromm.data.dataset import MultimodalDataset
from pyromm.evaluation import (
    conditional_grid_figure,
    latent_scatter_figure,
    plot_run,
    plot_tradeoff,
    run_title,
    save_figure,
    tradeoff_figure,
    training_curves_figure,
)

K = 4
LATENT = 3


class LinearModel(nn.Module):
    """Inference contract with fixed random linear maps: q(z | x_m) = N(A_m x_m, 1), q(z | X_S) = N(mean of the
    A_m x_m, 1), p(x_m | z) = N(B_m z, 1)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shapes = shapes
        self.modality_names = list(shapes)
        self.enc = nn.ModuleDict({m: nn.Linear(int(np.prod(s)), LATENT) for m, s in shapes.items()})
        self.dec = nn.ModuleDict({m: nn.Linear(LATENT, int(np.prod(s))) for m, s in shapes.items()})

    def encode(self, batch: MultimodalBatch) -> dict[str, dist.TorchDistribution]:
        return {m: dist.Normal(self.enc[m](batch.data[m].flatten(1)), 1.0).to_event(1) for m in batch.data}

    def infer(self, batch: MultimodalBatch, subset: list[str]) -> dist.TorchDistribution:
        loc = torch.stack([self.enc[m](batch.data[m].flatten(1)) for m in subset]).mean(0)
        return dist.Normal(loc, 1.0).to_event(1)

    def decode(self, name: str, z: torch.Tensor) -> dist.TorchDistribution:
        loc = torch.sigmoid(self.dec[name](z)).reshape(*z.shape[:-1], *self.shapes[name])
        return dist.Normal(loc, 1.0).to_event(len(self.shapes[name]))


SHAPES = {"img": (1, 8, 8), "vec": (6,), "rgb": (3, 5, 7)}


def dataset(n: int = 40) -> MultimodalDataset:
    g = torch.Generator().manual_seed(1)
    return MultimodalDataset({m: torch.rand(n, *s, generator=g) for m, s in SHAPES.items()}, torch.arange(n) % K)


ROWS = [
    {"model": model, "dataset": "digits", "beta": beta, "rec_error": 10 * beta + i, "latent_acc": 0.5 + 0.1 * i,
     "coherence": 0.4 + 0.05 * beta}
    for i, model in enumerate(["mmvm", "independent"])
    for beta in (0.25, 1.0, 4.0)
]


def test_tradeoff_says_which_direction_is_better_and_draws_the_chance_line():
    fig = tradeoff_figure(ROWS, y="coherence", num_classes=K, title="Coherence on digits")
    (ax,) = fig.axes
    xlabel, ylabel = (" ".join(label.split()) for label in (ax.get_xlabel(), ax.get_ylabel()))
    assert "lower is better" in xlabel and xlabel.startswith("Reconstruction error")
    assert "higher is better" in ylabel and ylabel.startswith("Cross-modal coherence")
    assert ax.get_title() == "Coherence on digits"
    (chance,) = [line for line in ax.get_lines() if line.get_label().startswith("chance")]
    assert np.allclose(chance.get_ydata(), 1 / K) and "1/4 classes" in chance.get_label()
    low, high = ax.get_ylim()
    assert low < 1 / K < high
    narrow = tradeoff_figure([{**row, "coherence": 0.100 + 0.001 * i} for i, row in enumerate(ROWS)], y="coherence")
    low, high = narrow.axes[0].get_ylim()
    assert high - low == pytest.approx(0.2) and low <= 0.1 and high >= 0.105  # a few thousandths stay small
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"mmvm", "independent"}
    assert {t.get_text() for t in ax.texts} == {"β=0.25", "β=1", "β=4"}
    assert not [line for line in tradeoff_figure(ROWS).axes[0].get_lines() if line.get_label().startswith("chance")]


def test_tradeoff_refuses_a_chance_level_of_one_class():
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        tradeoff_figure(ROWS, num_classes=1)


def test_plots_are_written_atomically_without_touching_the_backend(tmp_path):
    backend = matplotlib.get_backend()
    path = plot_tradeoff(ROWS, tmp_path / "sub" / "tradeoff.png", num_classes=K)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["tradeoff.png"]  # no temporary file left behind
    plain = tmp_path / "plain.txt"
    plain.write_text("")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)  # as open() would, not 0o600
    assert matplotlib.get_backend() == backend
    with pytest.raises(ValueError, match="has no suffix"):
        save_figure(tradeoff_figure(ROWS), tmp_path / "tradeoff")


def test_latent_scatter_has_one_labelled_panel_per_modality():
    model = LinearModel(SHAPES)
    fig = latent_scatter_figure(model, dataset(), title=run_title("mmvm", 4.0, "digits"))
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert [ax.get_title().split(":")[0] for ax in panels] == list(SHAPES)
    for ax in panels:
        assert ax.get_xlabel().startswith("PCA 1 (") and ax.get_ylabel().startswith("PCA 2 (")
        assert "% of variance" in ax.get_xlabel()
    assert "mmvm, β = 4, digits" in fig._suptitle.get_text()
    (legend,) = fig.legends
    assert legend.get_title().get_text() == "class"
    assert [t.get_text() for t in legend.get_texts()] == [str(k) for k in range(K)]


def test_latent_scatter_of_a_two_dimensional_latent_names_its_dimensions():
    class TwoD(LinearModel):
        def encode(self, batch):
            return {m: dist.Normal(self.enc[m](batch.data[m].flatten(1))[:, :2], 1.0).to_event(1) for m in batch.data}

    fig = latent_scatter_figure(TwoD(SHAPES), dataset(), modalities=["vec"])
    (ax,) = [ax for ax in fig.axes if ax.axison]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("latent dimension 1", "latent dimension 2")
    with pytest.raises(KeyError, match="'audio'"):
        latent_scatter_figure(TwoD(SHAPES), dataset(), modalities=["audio"])


def test_generation_grid_has_gaps_row_and_column_labels_and_a_title():
    n = 5
    fig = conditional_grid_figure(LinearModel(SHAPES), dataset(), num_examples=n, title="mmvm, β = 1, toy")
    names = list(SHAPES)
    assert len(fig.axes) == len(names) * (len(names) + 1)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels[:4] == ["img\n(input)", "img\nfrom img (reconstruction)", "vec\nfrom img", "rgb\nfrom img"]
    assert [ax.get_title(loc="left") for ax in fig.axes[:: len(names) + 1]] == [f"Given {m} only" for m in names]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [f"test #{k}" for k in range(n)]
    assert fig._suptitle.get_text().startswith("Conditional generation: mmvm, β = 1, toy")
    (image,) = [a for a in fig.axes[0].get_children() if isinstance(a, AxesImage)]
    canvas = np.asarray(image.get_array())
    gap = 2  # 20% of the 8-pixel width
    assert canvas.shape == (8, n * (8 + gap) - gap, 3)
    for k in range(1, n):
        assert np.all(canvas[:, k * (8 + gap) - gap : k * (8 + gap)] == 1.0)  # white gap before image k
    frames = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert [(f.get_x(), f.get_width()) for f in frames] == [(k * (8 + gap) - 0.5, 8) for k in range(n)]
    first = dataset().data["img"][0, 0].numpy()
    np.testing.assert_allclose(canvas[:, :8, 0], first, atol=1e-6)


def test_generation_grid_of_masked_data_numbers_the_observed_samples():
    data = dataset(10)
    mask = {"vec": torch.tensor([True, False] * 5)}
    masked = MultimodalDataset(data.data, data.labels, mask=mask)
    fig = conditional_grid_figure(LinearModel(SHAPES), masked, num_examples=6)
    vec_input = fig.axes[len(SHAPES) + 1]
    assert vec_input.get_ylabel() == "vec\n(input)"
    assert [t.get_text() for t in vec_input.get_xticklabels()] == ["test #0", "test #2", "test #4"]


METRICS = [
    {"epoch": e, "stage": "joint" if e <= 3 else "unimodal", "train/loss": 10.0 / e, "val/loss": v}
    for e, v in zip(range(1, 7), [9.0, 6.0, 4.0, 3.5, 3.8, 4.2])
]


def test_training_curves_are_labelled_and_mark_the_best_epoch_and_the_stages():
    fig = training_curves_figure(METRICS, title="telbo, β = 1, digits")
    (ax,) = fig.axes
    assert ax.get_xlabel() == "Epoch" and "lower is better" in " ".join(ax.get_ylabel().split())
    assert ax.get_title() == "Training curves: telbo, β = 1, digits"
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["training loss"].get_ydata(), [10.0 / e for e in range(1, 7)])
    np.testing.assert_allclose(lines["validation loss"].get_ydata(), [m["val/loss"] for m in METRICS])
    best = lines["lowest validation loss (epoch 4)"]
    assert list(best.get_xdata()) == [4] and list(best.get_ydata()) == [3.5]
    assert [t.get_text() for t in ax.texts] == ["stage joint", "stage unimodal"]
    (boundary,) = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert list(boundary.get_xdata()) == [3.5, 3.5]


def test_training_curves_without_validation_say_so_and_without_loss_are_refused():
    fig = training_curves_figure([{"epoch": 1, "stage": "s", "train/loss": 2.0}])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["training loss", "no validation loss (the run had no validation split: set val_fraction > 0)"]
    with pytest.raises(ValueError, match="'train/loss'"):
        training_curves_figure([{"epoch": 1, "stage": "s"}])


def test_plot_run_writes_every_per_run_figure(tmp_path):
    model = LinearModel({"img": SHAPES["img"]})
    data = MultimodalDataset({"img": torch.rand(12, *SHAPES["img"])}, torch.arange(12) % K)
    with pytest.warns(UserWarning, match="metrics.jsonl has no epochs"):
        paths = plot_run(model, data, tmp_path, title="t")
    assert [p.name for p in paths] == ["latent_scatter.png", "conditional_generation.png"]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in METRICS))
    paths = plot_run(model, data, tmp_path, title="t")
    assert [p.name for p in paths] == ["latent_scatter.png", "conditional_generation.png", "training_curves.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_sweep_tradeoffs_are_titled_with_the_dataset_and_get_the_chance_line(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep, "plot_tradeoff", lambda rows, path, **options: calls.append((path.name, options)))
    sweep.plot_tradeoffs([{**row, "num_classes": 10} for row in ROWS], tmp_path)
    assert [name for name, _ in calls] == ["tradeoff_latent.png", "tradeoff_coherence.png"]
    for (_, options), y in zip(calls, ("latent_acc", "coherence")):
        assert options["y"] == y and options["num_classes"] == 10 and ": digits\n" in options["title"]
    calls.clear()
    sweep.plot_tradeoffs([{**row, "num_classes": 2 + i % 2} for i, row in enumerate(ROWS)], tmp_path)
    assert all(options["num_classes"] is None for _, options in calls)  # no single chance level
