"""Figures a reader understands without the README: trade-off, latent scatter, conditional generation grid and
training curves, each with human axis labels that say which direction is better, and a title.

Each ``*_figure`` function returns a ``matplotlib.figure.Figure`` (drawn without pyplot, so no global matplotlib
state is touched); each ``plot_*`` function draws the same figure and writes it atomically with
:func:`save_figure`.
"""
from __future__ import annotations

import math
import textwrap
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from torch import Tensor, nn

from pyromm.data.dataset import MultimodalDataset
from pyromm.evaluation.classifiers import evaluating
from pyromm.evaluation.latent import encoder_means
from pyromm.evaluation.reconstruction import distribution_mean, observed_only
from pyromm.files import atomic_open
from pyromm.train.logging import MetricsLog

SYMBOLS = {"beta": "β", "alpha": "α"}

NLL_LABEL = (
    "Reconstruction error (negative log-likelihood per test sample, summed over modalities, nats; lower is better)"
)
METRIC_LABELS = {
    "rec_error": NLL_LABEL,
    "rec_nll": NLL_LABEL,
    "rec_mse": "Reconstruction error (mean squared error; lower is better)",
    "latent_acc": "Latent classification accuracy (linear probe on encoder means; higher is better)",
    "coherence": "Cross-modal coherence (share of generated samples of the input's class; higher is better)",
    "joint_coherence": "Joint coherence (share of prior samples whose modalities agree; higher is better)",
}
"""Axis labels of the summary metrics of a sweep row (``pyromm.sweep.summarize``)."""

METRIC_NAMES = {
    "rec_error": "reconstruction error",
    "rec_nll": "reconstruction error",
    "rec_mse": "reconstruction MSE",
    "latent_acc": "latent accuracy",
    "coherence": "coherence",
    "joint_coherence": "joint coherence",
}
"""Short names of the same metrics, for titles."""

SHARE_METRICS = {"latent_acc", "coherence", "joint_coherence"}
"""Metrics that are shares in [0, 1]: their axis spans at least ``SHARE_MIN_SPAN``, so that differences of a
few thousandths do not fill the plot."""
SHARE_MIN_SPAN = 0.2

LOSS_LABEL = "Loss per sample (negative training objective; lower is better)"
NO_VALIDATION = "no validation loss (the run had no validation split: set val_fraction > 0)"
SCATTER_CMAP_CLASSES = 10
"""Up to this many classes the latent scatter colours classes with tab10 and a legend; above, with a colour bar."""


def run_title(method: str, beta: float, dataset: str) -> str:
    """``"<method>, β = <beta>, <dataset>"``: the part of every per-run figure title that names the run."""
    return f"{method}, β = {beta:g}, {dataset}"


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` atomically (temporary file in the same directory, fsync, ``os.replace``); the
    format comes from the suffix (``.png``, ``.pdf``, ``.svg``)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if not fmt:
        raise ValueError(f"figure path {path} has no suffix; give one such as .png, .pdf or .svg")
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format=fmt, dpi=dpi)
    return path


def tradeoff_figure(
    rows: Iterable[Mapping[str, Any]],
    *,
    x: str = "rec_error",
    y: str = "latent_acc",
    hue: str = "model",
    label: str = "beta",
    num_classes: int | None = None,
    title: str | None = None,
) -> Figure:
    """One line with points per ``row[hue]`` through (row[x], row[y]), ordered and annotated by ``row[label]``
    (as MMVM Fig. 2: one point per β). Rows missing x or y are skipped. With ``num_classes`` K, a dashed
    horizontal line at the chance level 1/K (for accuracy-like y). Shares in [0, 1] (``SHARE_METRICS``) get a
    y-axis at least ``SHARE_MIN_SPAN`` wide."""
    groups: dict[str, list[tuple[float, float, Any]]] = defaultdict(list)
    for row in rows:
        if row.get(x) is None or row.get(y) is None:
            continue
        groups[str(row.get(hue))].append((float(row[x]), float(row[y]), row.get(label)))
    if not groups:
        raise ValueError(f"no row has both {x!r} and {y!r}")
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    symbol = SYMBOLS.get(label, label)
    for index, (name, points) in enumerate(sorted(groups.items())):
        if all(isinstance(p[2], (int, float)) for p in points):
            points.sort(key=lambda p: p[2])
        xs, ys, _ = zip(*points)
        ax.plot(xs, ys, marker="o", label=name)
        for px, py, value in points:
            if value is not None:
                text = f"{value:g}" if isinstance(value, (int, float)) else str(value)
                offset = (4, 4) if index % 2 == 0 else (4, -11)  # neighbouring methods' labels on opposite sides
                ax.annotate(f"{symbol}={text}", (px, py), textcoords="offset points", xytext=offset, fontsize=8)
    if num_classes is not None:
        _chance_line(ax, num_classes)
    if y in SHARE_METRICS:
        _min_span(ax, SHARE_MIN_SPAN)
    ax.set_xlabel(textwrap.fill(METRIC_LABELS.get(x, x), 60))
    ax.set_ylabel(textwrap.fill(METRIC_LABELS.get(y, y), 45))
    ax.grid(alpha=0.3)
    ax.legend(title="method" if hue == "model" else hue, fontsize=8)
    ax.set_title(
        title or f"{METRIC_NAMES.get(y, y).capitalize()} against {METRIC_NAMES.get(x, x)}", fontsize=11
    )
    return fig


def plot_tradeoff(rows: Iterable[Mapping[str, Any]], path: str | Path, **options: Any) -> Path:
    """:func:`tradeoff_figure` written to ``path``."""
    return save_figure(tradeoff_figure(rows, **options), path)


def latent_scatter_figure(
    model: nn.Module,
    dataset: MultimodalDataset,
    *,
    modalities: Sequence[str] | None = None,
    max_points: int = 2000,
    title: str | None = None,
) -> Figure:
    """One panel per modality m: encoder means μ_m(x_m) of the first ``max_points`` samples observing m, coloured
    by class; plotted directly when D ≤ 2, else projected on their own first two principal components.

    ``modalities`` defaults to every modality ``model.encode`` gives a posterior for; one it names without a
    posterior is refused."""
    means = encoder_means(model, dataset.subset(slice(0, max_points)))
    if modalities is None:
        modalities = [m for m in model.modality_names if m in means]
        if not modalities:
            raise ValueError("model.encode returned no per-modality posterior; there is no latent to scatter")
    for name in modalities:
        if name not in means:
            raise KeyError(f"model.encode returned no posterior for modality {name!r} (or no sample observes it)")
    classes = np.unique(np.concatenate([means[m][1] for m in modalities]))
    columns = min(len(modalities), 3)
    rows = math.ceil(len(modalities) / columns)
    fig = Figure(figsize=(4.2 * columns + 1.3, 4.0 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    scatter = None
    for ax, name in zip(axes, modalities):
        scatter = _scatter_panel(ax, name, *means[name], classes)
    for ax in axes[len(modalities):]:
        ax.set_axis_off()
    if len(classes) <= SCATTER_CMAP_CLASSES:
        handles = [
            Line2D([], [], marker="o", linestyle="", color=scatter.cmap(scatter.norm(k)), label=str(k)) for k in classes
        ]
        fig.legend(handles=handles, title="class", loc="outside right upper", fontsize=8)
    else:
        fig.colorbar(scatter, ax=axes.tolist(), label="class")
    heading = "Latent space per modality" + (f": {title}" if title else "")
    fig.suptitle(f"{heading}\neach point is one test sample's encoder mean, coloured by its class", fontsize=11)
    return fig


def plot_latent_scatter(model: nn.Module, dataset: MultimodalDataset, path: str | Path, **options: Any) -> Path:
    """:func:`latent_scatter_figure` written to ``path``."""
    return save_figure(latent_scatter_figure(model, dataset, **options), path)


def conditional_grid_figure(
    model: nn.Module, dataset: MultimodalDataset, *, num_examples: int = 8, title: str | None = None
) -> Figure:
    """For each source m a block: a row of the first ``num_examples`` inputs x_m (those observing m), then one row
    per target m̃ of E[p(x_m̃ | z)], z ~ ``model.infer(x_m, [m])``. Columns are test samples (numbered by their
    index in ``dataset``), separated by white gaps. (C, H, W) with C in 1 or 3 and (H, W) data are drawn as
    images on the value range of the inputs ([0, 1] when they lie in it), 1-D data as one curve per sample;
    other shapes get a panel saying they are not drawn."""
    names = list(model.modality_names)
    batch = dataset.batch(slice(0, num_examples))
    ranges = {name: _value_range(batch.data[name]) for name in names}
    per_block = len(names) + 1
    size = (max(6.0, 0.9 * num_examples + 2.2), 1.15 * len(names) * per_block + 1.0)
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(len(names) * per_block, 1, squeeze=False)[:, 0]
    with evaluating(model):
        for i, source in enumerate(names):
            top = i * per_block
            single = observed_only(batch, source)
            observed = batch.observed(source)
            indices = range(batch.batch_size) if observed is None else observed.nonzero().flatten().tolist()
            centres = _draw(axes[top], single.data[source], ranges[source])
            axes[top].set_ylabel(f"{source}\n(input)", rotation=0, ha="right", va="center", fontsize=9)
            axes[top].set_title(f"Given {source} only", loc="left", fontsize=10, fontweight="bold")
            if centres is None:
                for j in range(len(names)):
                    axes[top + 1 + j].set_axis_off()
                continue
            axes[top].xaxis.set_ticks_position("top")
            axes[top].set_xticks(centres, [f"test #{k}" for k in indices], fontsize=7)
            z = model.infer(single, [source]).sample()
            for j, target in enumerate(names):
                ax = axes[top + 1 + j]
                _draw(ax, distribution_mean(model.decode(target, z)), ranges[target])
                note = " (reconstruction)" if target == source else ""
                ax.set_ylabel(f"{target}\nfrom {source}{note}", rotation=0, ha="right", va="center", fontsize=9)
    heading = "Conditional generation" + (f": {title}" if title else "")
    fig.suptitle(
        f"{heading}\nper block: test inputs of one modality, then the decoder mean of every modality given that "
        "input alone",
        fontsize=11,
    )
    return fig


def plot_conditional_grid(model: nn.Module, dataset: MultimodalDataset, path: str | Path, **options: Any) -> Path:
    """:func:`conditional_grid_figure` written to ``path``."""
    return save_figure(conditional_grid_figure(model, dataset, **options), path)


def training_curves_figure(rows: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Figure:
    """Training and validation loss (``train/loss``, ``val/loss`` of the per-epoch metrics rows) against the epoch,
    the best validation epoch marked and, for runs of several stages, each stage's start labelled (a dotted line
    where each stage after the first begins)."""
    epochs = [int(row["epoch"]) for row in rows]
    curves = {
        label: [(e, float(row[key])) for e, row in zip(epochs, rows) if row.get(key) is not None]
        for key, label in (("train/loss", "training loss"), ("val/loss", "validation loss"))
    }
    if not any(curves.values()):
        raise ValueError("no metrics row has a 'train/loss' or 'val/loss'; there is no training curve to draw")
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for label, points in curves.items():
        if points:
            ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3, label=label)
    validation = curves["validation loss"]
    if validation:
        best_epoch, best = min(validation, key=lambda p: p[1])
        ax.plot([best_epoch], [best], marker="*", markersize=12, linestyle="", color="black",
                label=f"lowest validation loss (epoch {best_epoch})")
    else:
        ax.plot([], [], linestyle="", label=NO_VALIDATION)
    stages = [row.get("stage") for row in rows]
    starts = [k for k in range(len(rows)) if k == 0 or stages[k] != stages[k - 1]]
    for k in starts if len(starts) > 1 else []:
        if k > 0:
            ax.axvline(epochs[k] - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"stage {stages[k]}", (epochs[k] - 0.5, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -12), textcoords="offset points", fontsize=8, color="grey")
    ax.set_xlabel("Epoch")
    ax.set_ylabel(textwrap.fill(LOSS_LABEL, 40))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Training curves" + (f": {title}" if title else ""), fontsize=11)
    return fig


def plot_training_curves(rows: Sequence[Mapping[str, Any]], path: str | Path, **options: Any) -> Path:
    """:func:`training_curves_figure` written to ``path``."""
    return save_figure(training_curves_figure(rows, **options), path)


def plot_run(model: nn.Module, test: MultimodalDataset, run_dir: str | Path, *, title: str) -> list[Path]:
    """The per-run figures in ``run_dir``: latent_scatter.png, conditional_generation.png and, from the run's
    metrics.jsonl, training_curves.png (skipped with a warning naming the file when it has no epochs)."""
    run_dir = Path(run_dir)
    paths = [
        plot_latent_scatter(model, test, run_dir / "latent_scatter.png", title=title),
        plot_conditional_grid(model, test, run_dir / "conditional_generation.png", title=title),
    ]
    log = MetricsLog(run_dir)
    rows = log.read()
    if rows:
        paths.append(plot_training_curves(rows, run_dir / "training_curves.png", title=title))
    else:
        warnings.warn(f"{log.jsonl_path} has no epochs, so training_curves.png was not written", stacklevel=2)
    return paths


def _chance_line(ax: Axes, num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 for a chance level, got {num_classes}")
    chance = 1.0 / num_classes
    label = f"chance (1/{num_classes} classes = {chance:.2f})"
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=label)
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, chance - 0.05 * (high - low)), max(high, chance + 0.05 * (high - low)))


def _min_span(ax: Axes, span: float) -> None:
    """Widen the y-axis around its centre to at least ``span``, kept inside [0, 1] when it started there."""
    low, high = ax.get_ylim()
    if high - low >= span:
        return
    centre = (low + high) / 2
    low, high = centre - span / 2, centre + span / 2
    if low < 0.0:
        low, high = 0.0, span
    elif high > 1.0:
        low, high = 1.0 - span, 1.0
    ax.set_ylim(low, high)


def _scatter_panel(ax: Axes, name: str, features: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> Any:
    """Encoder means of one modality on ``ax``, projected on two principal components when D > 2."""
    dims = features.shape[1]
    if dims > 2:
        centred = features - features.mean(0)
        _, singular, components = np.linalg.svd(centred, full_matrices=False)
        features = centred @ components[:2].T
        explained = singular[:2] ** 2 / max(float((singular**2).sum()), 1e-12)
        xlabel, ylabel = (f"PCA {k + 1} ({100 * explained[k]:.0f}% of variance)" for k in range(2))
        heading = f"{name}: {dims}-D encoder means, first 2 principal components"
    elif dims == 2:
        xlabel, ylabel = "latent dimension 1", "latent dimension 2"
        heading = f"{name}: 2-D encoder means"
    else:
        features = np.concatenate([features, np.zeros_like(features)], axis=1)
        xlabel, ylabel = "latent dimension 1", "(one-dimensional latent)"
        heading = f"{name}: 1-D encoder means"
        ax.set_yticks([])
    cmap = "tab10" if len(classes) <= SCATTER_CMAP_CLASSES else "viridis"
    vmax = 9 if len(classes) <= SCATTER_CMAP_CLASSES else classes.max()
    scatter = ax.scatter(features[:, 0], features[:, 1], c=labels, cmap=cmap, vmin=0, vmax=vmax, s=7, alpha=0.8)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(heading, fontsize=9)
    ax.tick_params(labelsize=7)
    return scatter


def _value_range(x: Tensor) -> tuple[float, float]:
    """[0, 1] for data inside it, else the data's own (min, max)."""
    if x.numel() == 0:
        return 0.0, 1.0
    low, high = float(x.min()), float(x.max())
    if low >= 0.0 and high <= 1.0:
        return 0.0, 1.0
    return low, high if high > low else low + 1.0


def _draw(ax: Axes, x: Tensor, value_range: tuple[float, float]) -> np.ndarray | None:
    """The samples of ``x`` side by side with white gaps: framed images, or curves for 1-D samples, or a message for
    shapes that cannot be drawn. Returns the x coordinates of the sample centres (None when nothing is drawn)."""
    x = x.detach().cpu().float()
    event = tuple(x.shape[1:])
    if x.shape[0] == 0:
        _message(ax, "no sample observes this modality")
        return None
    if len(event) == 2 or (len(event) == 3 and event[0] in (1, 3)):
        images = x.unsqueeze(1) if len(event) == 2 else x
        low, high = value_range
        canvas, centres = _tile(((images - low) / (high - low)).clamp(0, 1))
        ax.imshow(canvas, interpolation="nearest")
        height, width = images.shape[2:]
        for centre in centres:  # a frame per sample, visible also where the image's border is white
            frame = Rectangle((centre - width / 2, -0.5), width, height, fill=False, edgecolor="0.4", linewidth=0.6)
            ax.add_patch(frame)
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        return centres
    if len(event) == 1:
        width = event[0]
        gap = max(1, round(0.2 * width))
        centres = []
        for k, sample in enumerate(x):
            start = k * (width + gap)
            ax.plot(np.arange(start, start + width), sample.numpy(), linewidth=0.8, color="C0")
            centres.append(start + (width - 1) / 2)
        low, high = value_range
        ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
        ax.set_xticks([])
        ax.tick_params(labelsize=6)
        return np.asarray(centres)
    _message(ax, f"event shape {event} is not drawn (only (C, H, W) with C in 1 or 3, (H, W) or (D,))")
    return None


def _message(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _tile(images: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, H, W) in [0, 1] → an (H, N·(W + gap) − gap, 3) RGB canvas with the images side by side on white
    gaps of 20% of the image width, and the x centre of each image."""
    n, c, h, w = images.shape
    gap = max(1, round(0.2 * w))
    rgb = images.expand(n, 3, h, w) if c == 1 else images
    canvas = torch.ones(3, h, n * (w + gap) - gap)
    for k, image in enumerate(rgb):
        canvas[:, :, k * (w + gap) : k * (w + gap) + w] = image
    centres = np.arange(n) * (w + gap) + (w - 1) / 2
    return canvas.permute(1, 2, 0).numpy(), centres

