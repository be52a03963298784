"""The latent probe's training features as the MMVM code records them (docs/reference_differences.md, row 10).

The MMVM code fits its latent linear probe on the encoder means its training steps return: those of the first
⌈N/B⌉ batches of the current epoch (N = 10,000 training samples, B the batch size), each computed in train mode
by the weights of that step, before its update. :class:`TrainingEpochMeans` records the same during a run's last
epoch: at the start of each of those steps (``on_step_start``, before the forward pass and the update), μ_m(x_m)
= ``model.encode(batch)[m].mean`` in train mode for every modality m the batch observes, with the batch's labels.
The encoders are deterministic given the weights (no dropout or batch statistics in pyromm's networks), so these
are the means of the step's own forward pass, computed without autocast.

With a run directory the record is written atomically to ``run_dir/latent_probe_features.pt`` at the end of the
last epoch, stamped with the epoch, the step and the run identity of the checkpoint written right after; an
evaluation refuses it for any other checkpoint (:func:`read_training_features`).
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from pyromm.data.batch import MultimodalBatch
from pyromm.data.dataset import MultimodalDataset
from pyromm.files import write_bytes
from pyromm.identity import read_stamp
from pyromm.train.callbacks import Callback

if TYPE_CHECKING:
    from pyromm.train.trainer import Trainer

TRAINING_FEATURES_FILE = "latent_probe_features.pt"
FORMAT = 1
_IDENTITY = ("config_hash", "architecture_hash")


class TrainingFeaturesError(RuntimeError):
    """The recorded probe features are missing, unreadable, or from another checkpoint than the one evaluated."""


class TrainingEpochMeans(Callback):
    """Records (μ_m, y) of the first ⌈``num_train`` / B⌉ training steps of the last epoch (module docstring).

    After the run, ``record`` holds what was written: ``epoch``, ``step``, ``identity`` (the run directory's
    stamp, None without one), ``batch_size``, ``batches``, and per modality ``features`` (n_m, D) and ``labels``.
    """

    def __init__(self, num_train: int) -> None:
        if num_train < 1:
            raise ValueError(f"num_train must be >= 1, got {num_train}")
        self.num_train = num_train
        self.record: dict[str, Any] | None = None
        self._clear()

    def _clear(self) -> None:
        self._epoch, self._batches = 0, 0
        self._features: dict[str, list[torch.Tensor]] = {}
        self._labels: dict[str, list[torch.Tensor]] = {}

    def on_fit_start(self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None) -> None:
        if trainer.distributed is not None:
            raise ValueError(
                "latent_probe_features='training_epoch' records the steps of one process; train it without "
                "data parallelism, or set latent_probe_features='final'"
            )

    def on_step_start(self, trainer: Trainer, batch: MultimodalBatch, epoch: int) -> None:
        if epoch != trainer.total_epochs:
            return
        if self._epoch != epoch:
            self._clear()
            self._epoch = epoch
        if self._batches >= math.ceil(self.num_train / trainer.batch_size):
            return
        if batch.labels is None:
            raise ValueError(
                "latent_probe_features='training_epoch' needs labels on the training batches; the dataset has none"
            )
        with torch.no_grad():
            posteriors = trainer.model.encode(batch)
        for name, posterior in posteriors.items():
            mean, labels = posterior.mean.reshape(batch.batch_size, -1), batch.labels
            keep = batch.observed(name)
            if keep is not None:
                mean, labels = mean[keep], labels[keep]
            self._features.setdefault(name, []).append(mean.detach().float().cpu())
            self._labels.setdefault(name, []).append(labels.cpu())
        self._batches += 1

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if row["epoch"] != trainer.total_epochs or self._epoch != row["epoch"]:
            return
        self.record = {
            "format": FORMAT,
            "epoch": int(trainer.epoch),
            "step": int(trainer.step),
            "identity": None if trainer.run_dir is None else read_stamp(trainer.run_dir),
            "batch_size": int(trainer.batch_size),
            "batches": self._batches,
            "features": {m: torch.cat(f) for m, f in self._features.items()},
            "labels": {m: torch.cat(y) for m, y in self._labels.items()},
        }
        if trainer.run_dir is not None and trainer.is_main:
            buffer = io.BytesIO()
            torch.save(self.record, buffer)
            write_bytes(Path(trainer.run_dir) / TRAINING_FEATURES_FILE, buffer.getvalue())
        self._clear()

    def state_dict(self) -> dict[str, Any]:
        """The means recorded so far in the last epoch (empty otherwise), so a resumed epoch continues them."""
        if not self._batches:
            return {}
        return {
            "epoch": self._epoch,
            "batches": self._batches,
            "features": {m: torch.cat(f) for m, f in self._features.items()},
            "labels": {m: torch.cat(y) for m, y in self._labels.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._epoch, self._batches = int(state["epoch"]), int(state["batches"])
        self._features = {m: [f] for m, f in state["features"].items()}
        self._labels = {m: [y] for m, y in state["labels"].items()}


def read_training_features(
    run_dir: str | os.PathLike, source: Mapping[str, Any] | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per modality (features, labels) of ``run_dir/latent_probe_features.pt``, as
    :func:`~pyromm.evaluation.latent.encoder_means` gives them; ``TrainingFeaturesError`` when the file is missing
    or unreadable, or was recorded for another checkpoint than ``source`` (``pyromm.provenance``)."""
    path = Path(run_dir) / TRAINING_FEATURES_FILE
    fix = "train the run again (they are recorded during its last epoch), or set latent_probe_features='final'"
    if not path.is_file():
        raise TrainingFeaturesError(f"latent_probe_features='training_epoch': {path} does not exist; {fix}")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise TrainingFeaturesError(f"cannot read {path} ({type(err).__name__}: {err}); {fix}") from err
    if record.get("format") != FORMAT:
        raise TrainingFeaturesError(f"{path} has format {record.get('format')!r}, this pyromm reads {FORMAT}; {fix}")
    recorded = f"{path} holds the means recorded up to epoch {record['epoch']}, step {record['step']}"
    if source is None or "checkpoint" not in source:
        raise TrainingFeaturesError(f"{recorded}, but the evaluated model was not loaded from a checkpoint of the run")
    identity, stamp = source.get("identity") or {}, record["identity"] or {}
    if (
        (source["epoch"], source["step"], source.get("batch", 0)) != (record["epoch"], record["step"], 0)
        or any(identity.get(k) != stamp.get(k) for k in _IDENTITY)
    ):
        raise TrainingFeaturesError(
            f"{recorded} of the run with config hash {stamp.get('config_hash')}, but the evaluated checkpoint "
            f"{source['checkpoint']} is epoch {source['epoch']}, step {source['step']} "
            f"(batch {source.get('batch', 0)}) "
            f"of config hash {identity.get('config_hash')}: the probe would fit features of other weights; {fix}"
        )
    return {
        m: (record["features"][m].double().numpy(), record["labels"][m].numpy()) for m in record["features"]
    }
