"""Trainer callbacks: the event contract and the built-ins (per-step JSON lines, TensorBoard, early stopping).

A run calls, in this order::

    on_fit_start(trainer, train, val)      once the run directory is open (a resumed run's checkpoint loaded)
      on_stage_start(trainer, stage)       before the stage's first epoch (not when a resumed run re-enters it)
        on_step_start(trainer, batch, epoch) before each step's forward pass: its batch (on the device), the epoch
        on_step_end(trainer, row)          every ``trainer.log_every_steps`` optimizer steps (none when 0)
        on_epoch_end(trainer, row)         after the epoch's validation, before the row is logged and checkpointed
      on_stage_end(trainer, stage)         after the stage's last epoch (or its early stop), and its checkpoint
    on_fit_end(trainer)                    also when ``fit`` raises or is stopped by a signal

A step row holds host floats: ``step`` (optimizer steps taken, the logged one included), ``epoch``,
``stage``, ``train/loss``, ``train/<term>`` of that step's objective and the ``hyper/<name>`` it used; building it
costs the one host-device sync of a logged step. An epoch row is the trainer's metrics row; ``on_epoch_end`` may
add keys to it, and may call ``trainer.request_stop`` (no other event may). ``state_dict()`` (plain JSON-able
values or tensors) goes into every checkpoint and ``load_state_dict`` gets it back when a run resumes, so a
resumed run decides as an uninterrupted one would. Every data-parallel rank calls the callbacks; the built-ins write files on rank 0 only.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Sequence

import torch
from torch import Tensor

from pyromm.data.batch import MultimodalBatch
from pyromm.data.dataset import MultimodalDataset
from pyromm.data.missing import complete_only
from pyromm.files import atomic_open
from pyromm.train.logging import read_jsonl

if TYPE_CHECKING:
    from pyromm.train.trainer import Stage, Trainer

EVENTS = (
    "on_fit_start", "on_stage_start", "on_step_start", "on_step_end", "on_epoch_end", "on_stage_end", "on_fit_end"
)
STOP_SCOPES = ("stage", "run")


class TrainerCallback(Protocol):
    """What ``Trainer(callbacks=[...])`` calls; subclass :class:`Callback` to implement only some events."""

    def on_fit_start(self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None) -> None: ...

    def on_stage_start(self, trainer: Trainer, stage: Stage) -> None: ...

    def on_step_start(self, trainer: Trainer, batch: MultimodalBatch, epoch: int) -> None: ...

    def on_step_end(self, trainer: Trainer, row: Mapping[str, Any]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None: ...

    def on_stage_end(self, trainer: Trainer, stage: Stage) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class Callback:
    """A :class:`TrainerCallback` whose events do nothing and whose state is empty."""

    def on_fit_start(self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None) -> None:
        pass

    def on_stage_start(self, trainer: Trainer, stage: Stage) -> None:
        pass

    def on_step_start(self, trainer: Trainer, batch: MultimodalBatch, epoch: int) -> None:
        pass

    def on_step_end(self, trainer: Trainer, row: Mapping[str, Any]) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        pass

    def on_stage_end(self, trainer: Trainer, stage: Stage) -> None:
        pass

    def on_fit_end(self, trainer: Trainer) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


def check_callbacks(callbacks: Iterable[Any]) -> list[TrainerCallback]:
    """The callbacks as a list; raises ``TypeError`` naming a callback that lacks an event or state method."""
    checked = list(callbacks)
    for index, callback in enumerate(checked):
        required = (*EVENTS, "state_dict", "load_state_dict")
        missing = [name for name in required if not callable(getattr(callback, name, None))]
        if missing:
            raise TypeError(
                f"callbacks[{index}] ({type(callback).__qualname__}) has no {', '.join(missing)}; subclass "
                "pyromm.train.callbacks.Callback to get no-op defaults"
            )
    return checked


def state_keys(callbacks: Sequence[Any]) -> list[str]:
    """The checkpoint key of each callback: its class name, with ``#2``, ``#3``, ... for repeats of a class."""
    keys, seen = [], {}
    for callback in callbacks:
        name = type(callback).__qualname__
        seen[name] = seen.get(name, 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return keys


class StepLog(Callback):
    """Appends every step row to ``path`` (default ``<run_dir>/steps.jsonl``), one JSON object a line.

    The file is line-buffered: an append cannot be atomic, so a crash may leave a partial last line, which
    :func:`~pyromm.train.logging.read_jsonl` skips. When a run starts or resumes, the rows after the
    checkpoint's step are dropped (the file is rewritten atomically) before new rows are appended.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._handle = None

    def on_fit_start(self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None) -> None:
        if not trainer.is_main:
            return
        path = self.path or _run_file(trainer, "steps.jsonl", "StepLog")
        kept = [row for row in read_jsonl(path) if int(row["step"]) <= trainer.step]
        with atomic_open(path, "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in kept)
        self._handle = open(path, "a", buffering=1)

    def on_step_end(self, trainer: Trainer, row: Mapping[str, Any]) -> None:
        if self._handle is not None:
            self._handle.write(json.dumps(dict(row)) + "\n")

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class TensorBoard(Callback):
    """TensorBoard event files in ``log_dir`` (default ``<run_dir>/tensorboard``), on the optimizer-step axis.

    Scalars: every number of each epoch row under its own name (``train/loss``, ``val/loss``, ``hyper/beta``,
    ``epoch``, ...), and of each step row under ``step/<name>``. Images, each epoch: for every image modality t
    ((C, H, W) with C in 1 or 3, or (H, W); a warning when there is none), a grid ``generation/t`` over ``images``
    fixed samples that observe every modality (of ``val``, else ``train``): row 1 the data x_t, then one row per
    source modality s of E[p(x_t | z)] at z = E[``model.infer(x_s, [s])``] (s = t: the reconstruction), through
    the inference contract of ``docs/architecture.md``; values are clipped to [0, 1]. ``images=0`` draws none.
    The grids use the model in eval mode without gradients, on a forked RNG, so they leave training unchanged.
    A resumed run purges the events logged after its checkpoint's step. Needs the ``tensorboard`` package (the
    ``pyromm[tensorboard]`` extra).
    """

    def __init__(self, log_dir: str | os.PathLike | None = None, images: int = 4) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError(
                "the TensorBoard callback needs the tensorboard package: pip install 'pyromm[tensorboard]'"
            ) from err
        if isinstance(images, bool) or not isinstance(images, int) or images < 0:
            raise ValueError(f"TensorBoard images must be an integer >= 0, got {images!r}")
        self._writer_class = SummaryWriter
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.images = images
        self.writer = None
        self._samples: MultimodalBatch | None = None

    def on_fit_start(self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None) -> None:
        if not trainer.is_main:
            return
        log_dir = self.log_dir or _run_file(trainer, "tensorboard", "TensorBoard")
        self._samples = self._pick_samples(trainer, val if val is not None else train) if self.images else None
        self.writer = self._writer_class(str(log_dir), purge_step=trainer.step + 1)

    def on_step_end(self, trainer: Trainer, row: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in _numbers(row, exclude=("step", "epoch")):
            self.writer.add_scalar(f"step/{key}", value, int(row["step"]))

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = int(row["step"])
        for key, value in _numbers(row, exclude=("step",)):
            self.writer.add_scalar(key, value, step)
        if self._samples is not None:
            for tag, grid in generation_grids(trainer.model, self._samples, trainer.device).items():
                self.writer.add_image(tag, grid, step, dataformats="CHW")
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _pick_samples(self, trainer: Trainer, data: MultimodalDataset) -> MultimodalBatch | None:
        model = trainer.model
        lacking = [name for name in ("modality_names", "infer", "decode") if not hasattr(model, name)]
        if lacking:
            raise TypeError(
                f"TensorBoard(images={self.images}) draws generations through the model's inference contract, but "
                f"{type(model).__qualname__} has no {', '.join(lacking)}; pass images=0 for scalars only"
            )
        shapes = data.event_shapes
        if not any(_is_image_shape(shape) for shape in shapes.values()):
            warnings.warn(
                f"TensorBoard(images={self.images}) draws image modalities ((C, H, W) with C in 1 or 3, or (H, W)) "
                f"only, and these modalities have event shapes {shapes}: no generation grids; pass images=0 to "
                "silence this",
                stacklevel=2,
            )
            return None
        try:
            complete = complete_only(data)
        except ValueError as err:
            raise ValueError(f"TensorBoard(images={self.images}): {err}; pass images=0 for scalars only") from None
        return complete.batch(slice(0, self.images))


def generation_grids(model: Any, samples: MultimodalBatch, device: torch.device) -> dict[str, Tensor]:
    """``{"generation/t": (C, H', W') image in [0, 1]}`` for every image modality t of ``samples``: row 1 the data
    x_t, then for each modality s of ``model.modality_names`` E[p(x_t | z)] at z = E[q(z | x_s)], 2-pixel gaps."""
    names = list(model.modality_names)
    targets = [t for t in names if _is_image_shape(tuple(samples.data[t].shape[1:]))]
    if not targets:
        return {}
    was_training = model.training
    model.eval()
    forked = []
    if device.type == "cuda":
        forked = [device.index if device.index is not None else torch.cuda.current_device()]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=forked):
            batch = samples.to(device)
            latents = {s: model.infer(MultimodalBatch({s: batch.data[s]}), [s]).mean for s in names}
            rows = {t: [batch.data[t]] + [model.decode(t, latents[s]).mean for s in names] for t in targets}
    finally:
        model.train(was_training)
    return {f"generation/{t}": _tile(rows[t]) for t in targets}


def _is_image_shape(event: tuple[int, ...]) -> bool:
    return len(event) == 2 or (len(event) == 3 and event[0] in (1, 3))


def _tile(rows: list[Tensor], gap: int = 2) -> Tensor:
    """Rows of (B, [C,] H, W) images as one (C, R·(H+gap)−gap, B·(W+gap)−gap) image, gaps white."""
    images = [r.detach().float().cpu().clamp(0, 1) for r in rows]
    images = [r.unsqueeze(1) if r.dim() == 3 else r for r in images]
    count, channels, height, width = images[0].shape
    grid = torch.ones(channels, len(images) * (height + gap) - gap, count * (width + gap) - gap)
    for i, row in enumerate(images):
        for j in range(count):
            top, left = i * (height + gap), j * (width + gap)
            grid[:, top : top + height, left : left + width] = row[j]
    return grid


class EarlyStopping(Callback):
    """Stops the stage (``scope="stage"``) or the whole run (``"run"``) once ``monitor`` (default ``val/loss``)
    has not fallen below best − ``min_delta`` for ``patience`` epochs in a row.

    An epoch improves when its value v is finite and v < best − min_delta (the first finite value always does);
    after ``patience`` epochs without improvement the trainer ends the stage (later stages still run) or the run
    after that epoch, checkpoints it and records ``stop`` and ``stop_reason`` in that epoch's metrics row. The
    count starts afresh at each stage, whose objectives may differ. Its state (best value and epoch, epochs
    without improvement) is checkpointed, so a resumed run stops at the same epoch. Needs a validation set.
    """

    def __init__(self, patience: int, min_delta: float = 0.0, scope: str = "stage", monitor: str = "val/loss") -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"EarlyStopping patience must be an integer >= 1, got {patience!r}")
        if not (min_delta >= 0 and math.isfinite(min_delta)):
            raise ValueError(f"EarlyStopping min_delta must be a finite number >= 0, got {min_delta!r}")
        if scope not in STOP_SCOPES:
            raise ValueError(f"EarlyStopping scope must be one of {STOP_SCOPES}, got {scope!r}")
        self.patience, self.min_delta, self.scope, self.monitor = patience, float(min_delta), scope, monitor
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0

    def on_fit_start(self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None) -> None:
        if val is None and self.monitor.startswith("val/"):
            raise ValueError(
                f"EarlyStopping on {self.monitor!r} needs a validation set: pass val to fit "
                "(in a RunConfig: val_fraction > 0)"
            )

    def on_stage_start(self, trainer: Trainer, stage: Stage) -> None:
        self.best, self.best_epoch, self.wait = None, None, 0

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if self.monitor not in row:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, which epoch rows lack; they have {sorted(row)}")
        value = float(row[self.monitor])
        if math.isfinite(value) and (self.best is None or value < self.best - self.min_delta):
            self.best, self.best_epoch, self.wait = value, int(row["epoch"]), 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            best = "no finite value yet" if self.best is None else f"best {self.best:.6g} at epoch {self.best_epoch}"
            trainer.request_stop(
                self.scope,
                f"{self.monitor} did not fall below best - {self.min_delta:g} for {self.wait} epochs ({best})",
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = None if state["best"] is None else float(state["best"])
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self.wait = int(state["wait"])


def _numbers(row: Mapping[str, Any], exclude: Sequence[str]) -> list[tuple[str, float]]:
    return [
        (key, float(value))
        for key, value in row.items()
        if key not in exclude and isinstance(value, (int, float)) and not isinstance(value, bool)
    ]


def _run_file(trainer: Trainer, name: str, who: str) -> Path:
    if trainer.run_dir is None:
        raise ValueError(f"{who} writes to the run directory by default: give the Trainer a run_dir or {who} a path")
    return trainer.run_dir / name
