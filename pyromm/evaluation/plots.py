"""Figures: representation/reconstruction trade-off, latent scatter, conditional generation grid.

Figures are drawn on ``matplotlib.figure.Figure`` objects and saved with the Agg canvas, so no global
matplotlib state (pyplot, backend) is touched.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor, nn

from pyromm.data.dataset import MultimodalDataset
from pyromm.evaluation.classifiers import evaluating
from pyromm.evaluation.latent import encoder_means
from pyromm.evaluation.reconstruction import distribution_mean, observed_only
from pyromm.files import atomic_open

SYMBOLS = {"beta": "β", "alpha": "α"}


def plot_tradeoff(
    rows: Iterable[Mapping[str, Any]],
    path: str | Path,
    *,
    x: str = "rec_error",
    y: str = "latent_acc",
    hue: str = "model",
    label: str = "beta",
) -> Path:
    """One line with points per ``row[hue]`` through (row[x], row[y]), ordered and annotated by ``row[label]``
    (as MMVM Fig. 2: one point per β). Rows missing x or y are skipped."""
    groups: dict[str, list[tuple[float, float, Any]]] = defaultdict(list)
    for row in rows:
        if row.get(x) is None or row.get(y) is None:
            continue
        groups[str(row.get(hue))].append((float(row[x]), float(row[y]), row.get(label)))
    if not groups:
        raise ValueError(f"no row has both {x!r} and {y!r}")
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.add_subplot()
    symbol = SYMBOLS.get(label, label)
    for name, points in sorted(groups.items()):
        if all(isinstance(p[2], (int, float)) for p in points):
            points.sort(key=lambda p: p[2])
        xs, ys, _ = zip(*points)
        ax.plot(xs, ys, marker="o", label=name)
        for px, py, value in points:
            if value is not None:
                text = f"{value:g}" if isinstance(value, (int, float)) else str(value)
                ax.annotate(f"{symbol}={text}", (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.legend(title=hue)
    return _save(fig, path)


def plot_latent_scatter(
    model: nn.Module, dataset: MultimodalDataset, modality: str, path: str | Path, max_points: int = 2000
) -> Path:
    """Encoder means μ_m(x_m) of the first ``max_points`` samples observing ``modality``, coloured by label:
    plotted directly when D ≤ 2, else projected on their first two principal components."""
    means = encoder_means(model, dataset.subset(slice(0, max_points)))
    if modality not in means:
        raise KeyError(f"model.encode returned no posterior for modality {modality!r}")
    features, labels = means[modality]
    title = f"{modality}: encoder means"
    if features.shape[1] > 2:
        centred = features - features.mean(0)
        _, singular, components = np.linalg.svd(centred, full_matrices=False)
        features = centred @ components[:2].T
        explained = singular[:2] ** 2 / max(float((singular**2).sum()), 1e-12)
        title += f" (PCA, {100 * explained.sum():.0f}% variance)"
    elif features.shape[1] == 1:
        features = np.concatenate([features, np.zeros_like(features)], axis=1)
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    scatter = ax.scatter(features[:, 0], features[:, 1], c=labels, cmap="tab10", s=6, alpha=0.8)
    ax.legend(*scatter.legend_elements(), title="label", fontsize=7, loc="best")
    ax.set_title(title)
    return _save(fig, path)


def plot_conditional_grid(
    model: nn.Module, dataset: MultimodalDataset, path: str | Path, num_examples: int = 8
) -> Path:
    """For each source m: a row of the first ``num_examples`` inputs x_m (those observing m), then one row per
    target m̃ of E[p(x_m̃ | z)], z ~ ``model.infer(x_m, [m])``. (C, H, W) and (H, W) data are shown as images
    clipped to [0, 1], 1-D data as line plots; other shapes get a panel saying they are not drawn."""
    names = list(model.modality_names)
    batch = dataset.batch(slice(0, num_examples))
    fig = Figure(figsize=(max(4.0, 1.1 * num_examples), 1.1 * len(names) * (len(names) + 1)), layout="constrained")
    axes = fig.subplots(len(names) * (len(names) + 1), 1, squeeze=False)[:, 0]
    with evaluating(model):
        for i, source in enumerate(names):
            row = i * (len(names) + 1)
            single = observed_only(batch, source)
            _draw(axes[row], single.data[source], f"{source} (input)")
            if single.batch_size == 0:
                continue
            z = model.infer(single, [source]).sample()
            for j, target in enumerate(names):
                _draw(axes[row + 1 + j], distribution_mean(model.decode(target, z)), f"{source}→{target}")
    return _save(fig, path)


def _draw(ax: Axes, x: Tensor, title: str) -> None:
    """Images side by side, or 1-D samples as lines, or a message for shapes that cannot be drawn."""
    x = x.detach().cpu().float()
    event = tuple(x.shape[1:])
    ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    if x.shape[0] == 0:
        _message(ax, "no sample observes this modality")
    elif len(event) == 2 or (len(event) == 3 and event[0] in (1, 3)):
        images = x.unsqueeze(1) if len(event) == 2 else x
        ax.imshow(_tile(images.clamp(0, 1)), cmap="gray" if images.shape[1] == 1 else None, vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    elif len(event) == 1:
        for sample in x:
            ax.plot(sample.numpy(), linewidth=0.8)
        ax.tick_params(labelsize=6)
    else:
        _message(ax, f"event shape {event} is not drawn (only (C, H, W) with C in 1 or 3, (H, W) or (D,))")


def _message(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _tile(images: Tensor, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) → one (H, N·(W + pad) − pad[, C]) array with the images side by side on a grey gap."""
    n, c, h, w = images.shape
    canvas = torch.full((c, h, n * (w + pad) - pad), 0.5)
    for k, image in enumerate(images):
        canvas[:, :, k * (w + pad) : k * (w + pad) + w] = image
    array = canvas.permute(1, 2, 0).numpy()
    return array[:, :, 0] if c == 1 else array


def _save(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` atomically (``pyromm.files``) in the format of ``path``'s suffix."""
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, dpi=120, format=path.suffix.lstrip(".") or "png")
    return path
