"""Hippocampal spike counts of five rats (Shahbaba et al., 2022; Dryad doi:10.7280/D14X30), one modality per
rat, windowed and paired across rats as in the MMVM rats code.

Files, per rat ``r`` in :data:`RATS`, under ``<root>/rats/<r>/``:

* ``<r>_trial_info.npy``: ``(trials, fields)``; column 3 is the odour, 1-based (label = column 3 − 1);
* ``<r>_spike_data_binned.npy``: ``(trials, neurons, time bins)`` spike counts (10 ms bins).

Samples. Rat r's window is ``[s_r, s_r + 25)`` with s = 225, 225, 250, 250, 225 for the rats in order; it
is cut into 16 sub-windows ``[s_r + t, s_r + t + 10)``, t = 0..15, and a sample is the ``(neurons, 10)``
counts flattened neuron-major (920, 790, 1040, 490, 460 values), kept as raw float32 counts. Only odours
0..3 are used. For odour l, n_l = min over the loaded rats of their number of odour-l trials; the paired
trial (l, j), j < n_l, joins the j-th odour-l trial (in file order) of every rat, so sample
``16·k + t`` of paired trial k takes offset t in every rat. Order: odour, then j, then t; size 16·Σ_l n_l.

Split (ours: the reference code trains and validates on the same samples). Per odour l, one
``numpy.random.default_rng(seed)`` permutes the n_l paired trials (odours in order 0..3) and the first
``int(test_fraction · n_l + 0.5)`` become test trials. All 16 overlapping sub-windows of a paired trial
stay in one split. ``split="all"`` returns every sample (the reference's setting).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from pyromm.data.dataset import MultimodalDataset
from pyromm.data.files import DataFormatError, TruncatedArrayError, check_file, load_npy
from pyromm.data.paths import data_root

RATS = ("barat", "buchanan", "mitt", "stella", "superchris")
NEURONS = {"barat": 92, "buchanan": 79, "mitt": 104, "stella": 49, "superchris": 46}
WINDOW_START = {"barat": 225, "buchanan": 225, "mitt": 250, "stella": 250, "superchris": 225}
WINDOW = 25
SUB_WINDOW = 10
OFFSETS = WINDOW - SUB_WINDOW + 1
NUM_ODOURS = 4
ODOUR_COLUMN = 3
RATS_DIR = "rats"
SPLITS = ("train", "test", "all")
SOURCE = (
    "get the per-rat files of Shahbaba et al. (2022) from Dryad, https://doi.org/10.7280/D14X30, and put them "
    "at <root>/rats/<rat>/<rat>_trial_info.npy and <rat>_spike_data_binned.npy"
)
# Dryad's file listing gives no md5 recorded here; pass checksums={name: md5} to check a copy.
PUBLISHED_MD5: dict[str, str] = {}


class ColumnCountError(DataFormatError):
    """A rat file has an unexpected number of columns (fields of the trial info, neurons of the spikes)."""


def rat_files(root: str | os.PathLike | None, rat: str) -> tuple[Path, Path]:
    """The trial-info and spike files of ``rat`` under ``<root>/rats/<rat>/``."""
    directory = data_root(root) / RATS_DIR / rat
    return directory / f"{rat}_trial_info.npy", directory / f"{rat}_spike_data_binned.npy"


def load_rat(
    root: str | os.PathLike | None, rat: str, checksums: Mapping[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rat ``rat``'s odour labels ``(trials,)`` (0-based int64) and spike counts ``(trials, neurons, bins)``."""
    if rat not in RATS:
        raise ValueError(f"unknown rat {rat!r}; choose from {RATS}")
    info_path, spike_path = rat_files(root, rat)
    info = load_npy(check_file(info_path, SOURCE, checksums, PUBLISHED_MD5))
    spikes = load_npy(check_file(spike_path, SOURCE, checksums, PUBLISHED_MD5))
    if info.ndim != 2 or info.shape[1] <= ODOUR_COLUMN:
        raise ColumnCountError(
            f"{info_path}: expected a (trials, fields) array with at least {ODOUR_COLUMN + 1} columns "
            f"(column {ODOUR_COLUMN} = odour), found shape {info.shape}"
        )
    if spikes.ndim != 3:
        raise DataFormatError(f"{spike_path}: expected (trials, neurons, time bins), found shape {spikes.shape}")
    if spikes.shape[1] != NEURONS[rat]:
        raise ColumnCountError(f"{spike_path}: expected {NEURONS[rat]} neurons (axis 1), found {spikes.shape[1]}")
    if spikes.shape[0] != info.shape[0]:
        shorter = spike_path if spikes.shape[0] < info.shape[0] else info_path
        raise TruncatedArrayError(
            f"{shorter} is short: {spike_path.name} holds {spikes.shape[0]} trials, {info_path.name} {info.shape[0]}"
        )
    end = WINDOW_START[rat] + WINDOW
    if spikes.shape[2] < end:
        raise TruncatedArrayError(f"{spike_path} holds {spikes.shape[2]} time bins, the window needs {end}")
    odour = info[:, ODOUR_COLUMN]
    if not np.array_equal(odour, np.round(odour)) or (odour < 1).any():
        raise DataFormatError(f"{info_path}: column {ODOUR_COLUMN} must hold 1-based odour ids, found {np.unique(odour)}")
    return odour.astype(np.int64) - 1, spikes


def pair_trials(odours: Sequence[np.ndarray], num_odours: int = NUM_ODOURS) -> tuple[np.ndarray, np.ndarray]:
    """Trials paired across rats: ``(trials (K, R), labels (K,))``; row (l, j) holds each rat's j-th trial
    with odour l, for l < ``num_odours`` and j < n_l = min over rats of their odour-l trial counts."""
    rows, labels = [], []
    for odour in range(num_odours):
        per_rat = [np.flatnonzero(o == odour) for o in odours]
        n = min(len(t) for t in per_rat)
        rows.append(np.stack([t[:n] for t in per_rat], axis=1))
        labels.append(np.full(n, odour, dtype=np.int64))
    return np.concatenate(rows), np.concatenate(labels)


def sub_windows(spikes: np.ndarray, trials: np.ndarray, start: int) -> np.ndarray:
    """``(len(trials)·16, neurons·10)``: row 16·k + t = ``spikes[trials[k], :, start+t : start+t+10]`` flattened."""
    block = spikes[trials][:, :, start : start + WINDOW]
    windows = sliding_window_view(block, SUB_WINDOW, axis=2)  # (K, neurons, 16, 10)
    return windows.transpose(0, 2, 1, 3).reshape(len(trials) * OFFSETS, -1)


def split_trials(labels: np.ndarray, split: str, test_fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the paired trials in ``split`` (see the module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must lie in [0, 1], got {test_fraction}")
    everything = np.arange(len(labels))
    if split == "all":
        return everything
    rng = np.random.default_rng(seed)
    test = []
    for odour in range(NUM_ODOURS):
        members = rng.permutation(np.flatnonzero(labels == odour))
        test.append(members[: int(test_fraction * len(members) + 0.5)])
    test_set = np.sort(np.concatenate(test))
    return test_set if split == "test" else np.setdiff1d(everything, test_set)


def load_rats(
    root: str | os.PathLike | None = None,
    split: str = "train",
    *,
    rats: Sequence[str] = RATS,
    test_fraction: float = 0.2,
    seed: int = 0,
    checksums: Mapping[str, str] | None = None,
) -> MultimodalDataset:
    """The rats dataset: one float32 modality per rat (named after it), odour labels, metadata."""
    rats = list(rats)
    if not rats or len(set(rats)) != len(rats):
        raise ValueError(f"rats must be distinct names from {RATS}, got {rats}")
    loaded = [load_rat(root, rat, checksums) for rat in rats]
    trials, labels = pair_trials([odours for odours, _ in loaded])
    if len(labels) == 0:
        raise DataFormatError(f"no odour 0..{NUM_ODOURS - 1} occurs in the trials of every rat of {rats}")
    keep = split_trials(labels, split, test_fraction, seed)
    data = {
        rat: torch.from_numpy(sub_windows(spikes, trials[keep, r], WINDOW_START[rat]).astype(np.float32))
        for r, (rat, (_, spikes)) in enumerate(zip(rats, loaded))
    }
    metadata = {
        "dataset": "rats",
        "source": "Shahbaba et al. (2022), Dryad doi:10.7280/D14X30",
        "split": split,
        "test_fraction": test_fraction,
        "seed": seed,
        "rats": rats,
        "window_start": [WINDOW_START[r] for r in rats],
        "trials_per_odour": np.bincount(labels, minlength=NUM_ODOURS).tolist(),
        "paired_trials": trials[keep].tolist(),
    }
    return MultimodalDataset(data, torch.from_numpy(np.repeat(labels[keep], OFFSETS)), metadata=metadata)
