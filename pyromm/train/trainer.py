"""The training loop: schedules give ``hyper``, the objective gives the loss, the optimizer steps.

Per step t (global optimizer step, 0-based) of epoch e (1-based)::

    hyper = {name: schedule(t, e)}; out = objective(model, batch, hyper); out.loss.backward(); optimizer.step()

Training runs as a list of ``Stage``s (default: one stage of ``epochs`` epochs over every parameter).
Checkpoints, ``config.json`` and per-epoch metrics go to ``run_dir``; with ``resume`` a run continues from
its newest readable checkpoint (a truncated or corrupt newest one is set aside with a warning) and, on CPU,
ends bit-identical to an uninterrupted run.

With ``restore_best`` and a validation set, the parameters of the epoch with the lowest ``val/loss`` of each
stage are loaded back when the stage ends (before the next stage starts, and at the end of the run), as
MultiVae's multistage trainer does; the row of that last epoch records ``best_epoch``. The best state so far
is part of every checkpoint, so a resumed run restores the same parameters.

SIGTERM or SIGINT during ``fit`` (with a ``run_dir``, in the main thread) lets the current step finish,
writes a checkpoint of it and raises ``SystemExit(128 + signum)`` or ``KeyboardInterrupt``. Mid-epoch, that
checkpoint (``epoch-EEEEE-batch-BBBBBB.pt``) records the batches done, their metric sums and the data-order
generator state at the start of the epoch: resume redraws the same permutation and continues at the next
batch, so the run still ends bit-identical. A second signal exits at once.

With ``distributed`` (a :class:`~pyromm.train.distributed.DataParallel`), each rank trains on its shard of
every global batch of ``batch_size`` samples and the gradients are averaged over ranks (see
``pyromm.train.distributed``); validation losses are averaged over the ranks' shards of the validation set.
Only rank 0 writes ``config.json``, metrics and checkpoints; the other ranks resume from the checkpoint rank 0
loads. Stop signals are not caught (ranks could see them at different steps): a stopped run resumes from its
last epoch checkpoint.

``callbacks`` (``pyromm.train.callbacks``) hear the run's stage, epoch and step events; step events come every
``log_every_steps`` optimizer steps, each at the cost of one host sync, and with a ``run_dir`` go to
``steps.jsonl``. A callback may end the stage or the run after an epoch (``request_stop``, e.g. early stopping):
a stopped stage's remaining epochs are skipped, the epoch numbers of later stages stay as planned, and the
checkpoint of the stopping epoch counts as the end of the stage, so a resumed run goes on where the stopped one
would. One progress bar per run counts its optimizer steps and names the run directory, the stage and the epoch.
"""
from __future__ import annotations

import bisect
import json
import math
import os
import random
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import pyro
import torch
from torch import Tensor, nn
from torch.distributions import transform_to
from pyro.optim import PyroOptim
from torch.optim import Optimizer

from pyromm.data.dataset import MultimodalDataset
from pyromm.files import remove_orphans
from pyromm.identity import RunIdentity, check_checkpoint_config, check_run_directory, write_identity
from pyromm.infer.objective import ELBOObjective, Objective, ObjectiveOutput
from pyromm.infer.rates import RateModeError
from pyromm.infer.stages import Stage
from pyromm.infer.traces import SiteError
from pyromm.lock import RunLock
from pyromm.train.checkpoint import (
    CheckpointDir,
    CheckpointMismatchError,
    capture_rng_state,
    check_signature,
    load_model_state,
    model_signature,
    restore_rng_state,
)
from pyromm.train.data_checks import check_training_data
from pyromm.train.distributed import DataParallel
from pyromm.train.acceleration import autocast, check_autocast, compile_networks, flushing_denormals
from pyromm.train.callbacks import STOP_SCOPES, StepLog, TrainerCallback, check_callbacks, state_keys
from pyromm.train.logging import MetricsLog
from pyromm.train.optimizers import PyroStageOptimizer, StageOptimizer, TorchStageOptimizer, optimizer_class
from pyromm.train.program_params import load_user_params, program_params, user_param_state
from pyromm.train.placement import batch_to, resident
from pyromm.train.progress import RunProgress
from pyromm.train.schedules import Schedule, as_schedule
from pyromm.train.signals import StopSignals

NONFINITE_MODES = ("raise", "skip")
RESUME_MODES = ("auto", "never", "must")


class Trainer:
    """Trains ``model`` on a ``MultimodalDataset`` with an objective: a ``pyro.infer.ELBO`` on the model's own
    ``model``/``guide`` programs (any Pyro ELBO; pyromm's log per-site terms), or ``objective(model, batch, hyper)``
    (an :class:`~pyromm.infer.objective.ELBOObjective` on other programs, say). The loss is the ELBO's divided by
    the batch size.

    Parameters: the model's (those of each stage) and every ``pyro.param`` or other ``pyro.module`` the programs
    touch, found by running them once per stage. The trainer keeps its own Pyro param store (a
    ``ParamStoreDict.scope``), so another model's parameters under the same names never leak in; after ``fit``
    the trained ``pyro.param`` values are in Pyro's global param store, as after SVI. ``optimizer``: a
    ``torch.optim`` class or name, or a ``pyro.optim`` optimizer or learning-rate scheduler (the latter stepped
    once per epoch). ``validate`` (default True) runs the steps with Pyro's validation on, so an invalid
    distribution parameter is refused with Pyro's message naming it; False skips those checks, which sync the
    host with the device.

    ``schedules`` maps hyper names to a ``Schedule`` or a number (a constant); it must include ``beta``
    (default ``{"beta": 1.0}``), which must never be negative. ``epochs`` is the total number of epochs
    and is used only when ``stages`` is None. ``keep_last`` >= 2 (the default) keeps an older checkpoint to
    fall back to when the newest one is truncated or corrupt.

    ``resume``: ``"auto"`` (or True) continues from the newest checkpoint in ``run_dir`` when there is one,
    ``"must"`` raises when there is none, ``"never"`` (or False) deletes the checkpoints and metrics and starts
    over. A run resumes only a checkpoint and a ``config.json`` of the same experiment (``pyromm.identity``:
    same config up to epochs and other resumable settings, same architecture), else ``RunIdentityError``
    lists the differences; checkpoints without a readable ``config.json`` are an error too. While ``fit``
    runs, ``run_dir`` is locked against other writers (``pyromm.lock``).

    A NaN or inf loss or gradient is found with one host sync per ``sync_every`` steps (the flags stay on
    the device until then). ``on_nonfinite="raise"`` raises ``FloatingPointError`` naming the step, the
    non-finite objective terms (e.g. ``rate/m1``) and the first parameter with a non-finite gradient,
    before any later checkpoint is written. ``"skip"`` skips the optimizer update of such a step (one host
    sync per step, to decide), leaves it out of the epoch's metrics and counts it in ``skipped_steps``; the
    step counter, and with it the schedules, still advances.

    ``restore_best``: at the end of each stage, load the parameters the model had after the stage's epoch of
    lowest finite validation loss (ties: the earliest); without a validation set nothing is restored.

    Data live on ``device`` for the whole run when they fit in ``resident_fraction`` of its free memory
    (CUDA), else each batch is copied there as it is drawn (``pyromm.train.placement``). ``compile`` (True:
    inductor, or a ``torch.compile`` backend name) compiles the model's networks in place when ``fit`` starts
    (``pyromm.train.acceleration.compile_networks``); ``autocast='bf16'`` runs the objective's
    forward pass under bf16 autocast (``pyromm.train.acceleration``). Pyro validation is off in the loop.
    ``flush_denormals`` (default on) reads float32 values below ~1.2e-38 as zero while training on a CPU,
    where denormal arithmetic is many times slower (``pyromm.train.acceleration.flushing_denormals``).

    ``callbacks`` (:class:`~pyromm.train.callbacks.TrainerCallback`) are called at the events listed in
    ``pyromm.train.callbacks``; with ``log_every_steps`` = k > 0 every k-th optimizer step is reported to them
    (one host sync each; steps in between sync nothing more) and, with a ``run_dir``, written to ``steps.jsonl``
    by a :class:`~pyromm.train.callbacks.StepLog` put first in ``callbacks`` (unless they hold one).
    """

    sync_every: int = 20
    resident_fraction: float = 0.5

    def __init__(
        self,
        model: nn.Module,
        objective: Objective | pyro.infer.ELBO,
        *,
        optimizer: str | type[Optimizer] | PyroOptim = "adam",
        lr: float = 1e-3,
        optimizer_kwargs: Mapping[str, Any] | None = None,
        schedules: Mapping[str, Schedule | float] | None = None,
        batch_size: int = 128,
        epochs: int = 10,
        device: str | torch.device = "cpu",
        seed: int = 0,
        run_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 1,
        keep_last: int | None = 2,
        resume: str | bool = "auto",
        progress: bool = True,
        drop_last: bool = True,
        grad_clip: float | None = None,
        config: Mapping[str, Any] | None = None,
        stages: Iterable[Stage] | None = None,
        on_nonfinite: str = "raise",
        restore_best: bool = False,
        distributed: DataParallel | None = None,
        compile: bool | str = False,
        autocast: str | None = None,
        flush_denormals: bool = True,
        validate: bool = True,
        callbacks: Iterable[TrainerCallback] = (),
        log_every_steps: int = 0,
    ) -> None:
        self.model = model
        self.objective = as_objective(objective)
        self.pyro_optimizer = optimizer if isinstance(optimizer, PyroOptim) else None
        self.optimizer_class = None if self.pyro_optimizer is not None else optimizer_class(optimizer)
        self.lr = lr
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self.schedules = {name: as_schedule(s) for name, s in (schedules or {"beta": 1.0}).items()}
        _check_beta(self.schedules)
        self.batch_size = _at_least_one("batch_size", batch_size)
        self.stages = list(stages) if stages is not None else [Stage("train", _at_least_one("epochs", epochs), self.objective)]
        if not self.stages:
            raise ValueError("stages is empty")
        self.device = torch.device(device)
        self.seed = seed
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.checkpoint_every = _at_least_one("checkpoint_every", checkpoint_every)
        self.keep_last = keep_last
        self.resume = _resume_mode(resume)
        self.progress = progress and (distributed is None or distributed.is_main)
        self.drop_last = drop_last
        self.distributed = distributed
        if distributed is not None:
            distributed.check(self.batch_size, drop_last)
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip}")
        self.grad_clip = grad_clip
        if on_nonfinite not in NONFINITE_MODES:
            raise ValueError(f"on_nonfinite must be one of {NONFINITE_MODES}, got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.restore_best = restore_best
        self.compile = "inductor" if compile is True else compile or None
        self.autocast = check_autocast(autocast)
        self.flush_denormals = flush_denormals
        self.validate = bool(validate)
        self._param_state: dict[str, Any] | None = None
        self._user_params: list[Tensor] = []
        self._probe: tuple[Any, dict[str, float]] | None = None
        if isinstance(log_every_steps, bool) or not isinstance(log_every_steps, int) or log_every_steps < 0:
            raise ValueError(f"log_every_steps must be an integer >= 0 (0: no step events), got {log_every_steps!r}")
        self.log_every_steps = log_every_steps
        self.callbacks = check_callbacks(callbacks)
        if log_every_steps and self.run_dir is not None and not any(isinstance(c, StepLog) for c in self.callbacks):
            self.callbacks.insert(0, StepLog())
        self.user_config = dict(config or {})
        self.generator = torch.Generator()
        self.optimizer: StageOptimizer | None = None
        self.epoch = 0
        self.step = 0
        self.stage_index = 0
        self._params: list[nn.Parameter] = []
        self._param_names: list[str] = []
        self._progress: _Progress | None = None
        self._progress_bar: RunProgress | None = None
        self._stop_request: tuple[str, str] | None = None
        self._event: str | None = None
        self._best: dict[str, Any] | None = None
        self._stage_ends = [int(e) for e in np.cumsum([s.epochs for s in self.stages])]
        self._lock: RunLock | None = None

    @property
    def total_epochs(self) -> int:
        return self._stage_ends[-1]

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (always, unless a data-parallel rank other than 0)."""
        return self.distributed is None or self.distributed.is_main

    def request_stop(self, scope: str, reason: str) -> None:
        """From ``on_epoch_end`` only: end the current stage (``"stage"``) or the run (``"run"``) after this epoch;
        the epoch's metrics row records ``stop`` (the scope) and ``stop_reason``."""
        if scope not in STOP_SCOPES:
            raise ValueError(f"request_stop scope must be one of {STOP_SCOPES}, got {scope!r}")
        if self._event != "on_epoch_end":
            raise RuntimeError(
                f"request_stop was called from {self._event or 'outside the callbacks'}; call it from on_epoch_end, "
                "whose decision the checkpoint of that epoch keeps"
            )
        self._stop_request = (scope, reason)

    def config(self) -> dict[str, Any]:
        """The trainer's settings as JSON-able values."""
        return {
            "optimizer": _qualname(self.optimizer_class or self.pyro_optimizer),
            "lr": self.lr,
            "optimizer_kwargs": self.optimizer_kwargs,
            "schedules": {name: s.config() for name, s in self.schedules.items()},
            "batch_size": self.batch_size,
            "seed": self.seed,
            "drop_last": self.drop_last,
            "grad_clip": self.grad_clip,
            "on_nonfinite": self.on_nonfinite,
            "restore_best": self.restore_best,
            "compile": self.compile,
            "autocast": self.autocast,
            "flush_denormals": self.flush_denormals,
            "checkpoint_every": self.checkpoint_every,
            "keep_last": self.keep_last,
            "stages": [
                {
                    "name": s.name,
                    "epochs": s.epochs,
                    "objective": repr(self._objective_of(s)),
                    "trainable": None if s.trainable is None else _qualname(s.trainable),
                    "reset_optimizer": s.reset_optimizer,
                }
                for s in self.stages
            ],
        }

    def run_config(self) -> dict[str, Any]:
        """The ``config`` argument plus ``"model": model.config()`` (when defined) and ``"trainer"``."""
        merged = dict(self.user_config)
        model_config = getattr(self.model, "config", None)
        added = {"trainer": self.config()}
        if callable(model_config):
            added["model"] = model_config()
        clash = sorted(merged.keys() & added.keys())
        if clash:
            raise ValueError(f"config keys {clash} are reserved for the trainer and model configs")
        merged.update(added)
        return merged

    def fit(self, train: MultimodalDataset, val: MultimodalDataset | None = None) -> list[dict[str, Any]]:
        """Train over every stage; return one metrics row per epoch (the whole run's, when resumed)."""
        model = self.model.to(self.device)
        if self.compile:
            compile_networks(model, self.compile)
        if self.distributed is not None:
            self.distributed.broadcast_module(model)
        train = resident(check_training_data(model, train, "train"), self.device, self.resident_fraction)
        if val is not None:
            val = resident(check_training_data(model, val, "validation"), self.device, self.resident_fraction)
        self._check_first_batch(train)
        if val is not None:
            self._check_first_batch(val)
        config_json = _to_json(self.run_config())
        self._probe = (batch_to(next(iter(train.batches(self.batch_size))), self.device), self._hyper(1))
        self._seed()
        self.optimizer, self.epoch, self.step, self.stage_index, self._progress = None, 0, 0, 0, None
        self._best = None
        initial = [(p, p.requires_grad) for p in model.parameters()]
        was_training = model.training
        history: list[dict[str, Any]] = []
        log = checkpoints = None
        started = False

        def save(progress: _Progress | None = None) -> None:
            state = self._state(config_json, progress)
            if checkpoints is not None:
                checkpoints.save(state)

        store = pyro.get_param_store()
        try:
            with StopSignals(enabled=self.run_dir is not None and self.distributed is None) as stop, store.scope(
                self._param_state
            ) as self._param_state:
                if self.run_dir is not None:
                    log, checkpoints, history = self._open_run(config_json, initial)
                self._progress_bar = self._open_progress_bar(train)
                started = True
                self._dispatch("on_fit_start", train, val)
                with pyro.validation_enabled(self.validate), flushing_denormals(
                    self.device, self.flush_denormals
                ), frozen_parameters_unregistered():
                    while self.epoch < self.total_epochs:
                        epoch = self.epoch + 1
                        stage_index = bisect.bisect_left(self._stage_ends, epoch)
                        if self.optimizer is None or stage_index != self.stage_index:
                            self._enter_stage(stage_index, initial)
                        if epoch - 1 in (0, *self._stage_ends) and self._progress is None:
                            self._dispatch("on_stage_start", self.stages[stage_index])
                        row = self._run_epoch(epoch, train, val, stop, save)
                        self.epoch = epoch
                        if self.restore_best:
                            self._track_best(row)
                        self._dispatch("on_epoch_end", row)
                        if self._stop_request is not None:
                            self._stop(row, stage_index)
                        stage_over = self.epoch in self._stage_ends
                        if self.restore_best and stage_over and self._best is not None:
                            row["best_epoch"] = self._load_best()
                        history.append(row)
                        if log is not None:
                            log.append(row)
                        stopping = stop.signum is not None
                        scheduled = epoch % self.checkpoint_every == 0 or stage_over
                        if self.run_dir is not None and (scheduled or stopping):
                            save()
                        if stage_over:
                            self._dispatch("on_stage_end", self.stages[stage_index])
                        if stopping:
                            stop.exit()
        finally:
            for param, flag in initial:
                param.requires_grad_(flag)
            model.train(was_training)
            self._publish_user_params()
            if self._progress_bar is not None:
                self._progress_bar.close()
                self._progress_bar = None
            if started:
                self._dispatch("on_fit_end")
            self._unlock()
        return history

    def _publish_user_params(self) -> None:
        """Put the trained ``pyro.param`` values into Pyro's global param store, as SVI leaves them."""
        if self._param_state is None:
            return
        store = pyro.get_param_store()
        owned = {id(p) for p in self.model.parameters()}
        for name, value in self._param_state["params"].items():
            if id(value) in owned or name.startswith("model$$$"):
                continue
            constraint = self._param_state["constraints"][name]
            if name in store:
                del store[name]
            with torch.no_grad():
                store.setdefault(name, transform_to(constraint)(value.detach()), constraint)

    def _dispatch(self, event: str, *args: Any) -> None:
        self._event = event
        try:
            for callback in self.callbacks:
                getattr(callback, event)(self, *args)
        finally:
            self._event = None

    def _open_progress_bar(self, train: MultimodalDataset) -> RunProgress:
        """The run's bar: steps taken so far of the steps the remaining epochs add to them."""
        per_epoch = train.num_batches(self.batch_size, self.drop_last)
        done_in_epoch = 0 if self._progress is None else self._progress.batches
        total = self.step + (self.total_epochs - self.epoch) * per_epoch - done_in_epoch
        run = None if self.run_dir is None else self.run_dir.name
        return RunProgress(run, total, self.step, self.total_epochs, per_epoch, self.progress)

    def _stop(self, row: dict[str, Any], stage_index: int) -> None:
        """Act on a callback's stop request after epoch ``row["epoch"]``: record it in the row and move the epoch
        counter to the end of the stage or run, so the skipped epochs never run (nor after a resume)."""
        (scope, reason), self._stop_request = self._stop_request, None
        row["stop"], row["stop_reason"] = scope, reason
        end = self._stage_ends[stage_index] if scope == "stage" else self.total_epochs
        self._progress_bar.skip_epochs(end - self.epoch)
        self.epoch = end

    def _open_run(
        self, config_json: str, initial: list[tuple[nn.Parameter, bool]]
    ) -> tuple[MetricsLog | None, CheckpointDir | None, list[dict[str, Any]]]:
        """Lock ``run_dir``, remove orphan temporary files, then resume from the newest readable checkpoint of
        this experiment (or clear them with ``resume="never"``), align the metrics log with it and write
        ``config.json`` and ``identity.json``; return the log, the checkpoints and the rows kept.

        Data-parallel ranks other than 0 restore the checkpoint rank 0 loaded and return (None, None, [])."""
        main = self.distributed is None or self.distributed.is_main
        identity = RunIdentity(json.loads(config_json), model_signature(self.model))
        checkpoints = CheckpointDir(self.run_dir / "checkpoints", self.keep_last, stamp=identity.stamp())
        latest = None
        if main:
            self._lock = RunLock(self.run_dir)
            self._lock.acquire()
            remove_orphans(self.run_dir)
            remove_orphans(checkpoints.directory)
            if self.resume == "never":
                checkpoints.clear()
            latest = checkpoints.load_latest(map_location="cpu")
            if latest is not None:
                check_signature(identity.architecture, latest[1]["model_signature"], latest[0])
            if checkpoints.paths():
                check_run_directory(self.run_dir, identity.config)
        if self.distributed is not None:
            latest = self.distributed.broadcast_object(latest)
        if latest is None and self.resume == "must":
            raise FileNotFoundError(f"resume='must', but {checkpoints.directory} holds no checkpoint to resume from")
        if latest is not None:
            path, state = latest
            check_checkpoint_config(identity.config, state, path)
            self._restore(path, state, initial)
            if main:
                print(f"resumed {self.run_dir} from epoch {self.epoch}, step {self.step}", flush=True)
        if not main:
            return None, None, []
        log = MetricsLog(self.run_dir)
        history = log.truncate(self.epoch)
        write_identity(self.run_dir, identity)
        return log, checkpoints, history

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _check_first_batch(self, data: MultimodalDataset) -> None:
        """The model's ``check_dataset`` over all of ``data`` when it has one, else ``check_batch`` on the first batch."""
        check_dataset = getattr(self.model, "check_dataset", None)
        if callable(check_dataset):
            check_dataset(data)
            return
        check = getattr(self.model, "check_batch", None)
        if callable(check):
            check(batch_to(next(iter(data.batches(self.batch_size))), self.device))

    def _seed(self) -> None:
        if self.distributed is None:
            torch.manual_seed(self.seed)
            np.random.seed(self.seed)
            random.seed(self.seed)
        else:
            self.distributed.seed_globals(self.seed)
        self.generator.manual_seed(self.seed)

    def _enter_stage(self, index: int, initial: list[tuple[nn.Parameter, bool]]) -> None:
        """Freeze what the stage does not train, find its programs' ``pyro.param``s and build its optimizer."""
        stage = self.stages[index]
        if stage.trainable is None:
            params = [p for p, flag in initial if flag]
        else:
            params = list({id(p): p for p in stage.trainable(self.model)}.values())
            owned = {id(p) for p, _ in initial}
            if any(id(p) not in owned for p in params):
                raise ValueError(f"stage {stage.name!r}: trainable() returned parameters that are not the model's")
        chosen = {id(p) for p in params}
        for param, _ in initial:
            param.requires_grad_(id(param) in chosen)
        batch, hyper = self._probe
        with pyro.validation_enabled(self.validate):
            self._user_params = program_params(self._objective_of(stage), self.model, batch, hyper)
        if stage.trainable is None:
            params = params + self._user_params
        if not params:
            raise ValueError(f"stage {stage.name!r} has no trainable parameters")
        if self.pyro_optimizer is not None:
            optimizer: StageOptimizer = PyroStageOptimizer(self.pyro_optimizer, self.model, params)
        else:
            optimizer = TorchStageOptimizer(self.optimizer_class(params, lr=self.lr, **self.optimizer_kwargs))
            if isinstance(self.optimizer, TorchStageOptimizer) and not stage.reset_optimizer:
                optimizer.carry_state(self.optimizer, params)
        names = {id(p): name for name, p in self.model.named_parameters()}
        store = pyro.get_param_store()
        self.optimizer, self.stage_index, self._params = optimizer, index, params
        self._param_names = [names.get(id(p)) or store.param_name(p) for p in params]

    def _objective_of(self, stage: Stage) -> Objective:
        return as_objective(stage.objective) if stage.objective is not None else self.objective

    def _restore(self, path: Path, state: Mapping[str, Any], initial: list[tuple[nn.Parameter, bool]]) -> None:
        """Continue from a loaded checkpoint: model, stage and optimizer, counters, RNG and data-order states,
        and for a mid-epoch checkpoint the epoch's progress.

        Loaded on CPU: ``load_state_dict`` moves tensors to the parameters' device (and keeps the
        optimizer's step counters on CPU, as torch expects).
        """
        epoch, batch, stage = int(state["epoch"]), int(state.get("batch", 0)), int(state["stage"])
        current = epoch + 1 if batch else epoch
        if current > self.total_epochs:
            raise ValueError(
                f"checkpoint {path} is at epoch {current} but this run has {self.total_epochs} epochs; "
                "use resume='never' or another run_dir"
            )
        expected = bisect.bisect_left(self._stage_ends, current)
        if stage != expected:
            raise CheckpointMismatchError(
                f"checkpoint {path} is at epoch {current} in stage {stage}, but these stages put epoch {current} "
                f"in stage {expected} ({self.stages[expected].name!r})"
            )
        load_model_state(self.model, state, path)
        self._enter_stage(stage, initial)
        load_user_params(self._user_params, state.get("pyro_params") or {})
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = epoch, int(state["step"])
        restore_rng_state(state["rng"])
        if self.distributed is not None:
            self.distributed.restore_rng_states(state.get("rank_rng"), self.seed, self.step)
        self.generator.set_state(state["generator"].cpu())
        self._best = state.get("best")
        self._restore_callbacks(state.get("callbacks", {}))
        self._progress = _Progress.from_state(batch, state["progress"], self.device) if batch else None

    def _state(self, config_json: str, progress: _Progress | None = None) -> dict[str, Any]:
        """The checkpoint: after epoch ``self.epoch``, or ``progress.batches`` batches into the next one.

        Data-parallel: every rank must call it (it gathers the ranks' RNG states into ``rank_rng``)."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "pyro_params": user_param_state(self._user_params),
            "epoch": self.epoch,
            "step": self.step,
            "stage": self.stage_index,
            "rng": capture_rng_state(),
            "generator": self.generator.get_state() if progress is None else progress.generator,
            "model_signature": model_signature(self.model),
            "config": config_json,
            "batch": 0 if progress is None else progress.batches,
            "progress": None if progress is None else progress.state(),
            "best": self._best,
            "callbacks": dict(zip(state_keys(self.callbacks), (c.state_dict() for c in self.callbacks))),
        }
        if self.distributed is not None:
            state["rank_rng"] = self.distributed.gather_rng_states()
        return state

    def _restore_callbacks(self, saved: Mapping[str, Any]) -> None:
        """Give each callback its checkpointed state (matched by :func:`~pyromm.train.callbacks.state_keys`);
        a callback the checkpoint has no state for starts afresh."""
        for key, callback in zip(state_keys(self.callbacks), self.callbacks):
            if saved.get(key):
                callback.load_state_dict(saved[key])

    def _track_best(self, row: Mapping[str, Any]) -> None:
        """Keep a copy of the model's state when the epoch's ``val/loss`` is finite and below the stage's best."""
        loss = row.get("val/loss")
        if loss is None or not math.isfinite(loss) or (self._best is not None and loss >= self._best["loss"]):
            return
        state = {name: t.detach().clone() for name, t in self.model.state_dict().items()}
        self._best = {"epoch": int(row["epoch"]), "loss": float(loss), "model": state}

    def _load_best(self) -> int:
        """Load the stage's best state into the model, end the stage's tracking; return the epoch it came from."""
        best, self._best = self._best, None
        self.model.load_state_dict(best["model"])
        return best["epoch"]

    def _hyper(self, epoch: int) -> dict[str, float]:
        return {name: float(schedule(self.step, epoch)) for name, schedule in self.schedules.items()}

    def _run_epoch(
        self,
        epoch: int,
        train: MultimodalDataset,
        val: MultimodalDataset | None,
        stop: StopSignals,
        save: Callable[[_Progress], None],
    ) -> dict[str, Any]:
        """One pass over ``train`` (then ``val``), continuing a resumed epoch at its next batch.

        Host syncs every ``sync_every`` steps (every step with ``on_nonfinite="skip"``). After a step, a stop
        signal saves a mid-epoch checkpoint and exits (unless the epoch is complete: ``fit`` handles that).
        """
        stage = self.stages[self.stage_index]
        objective = self._objective_of(stage)
        progress, self._progress = self._progress or _Progress(), None
        progress.generator = self.generator.get_state()
        skip = self.on_nonfinite == "skip"
        start = time.perf_counter()
        self.model.train()
        window: list[_StepRecord] = []
        total = train.num_batches(self.batch_size, self.drop_last)
        batches = train.batches(self.batch_size, shuffle=True, generator=self.generator, drop_last=self.drop_last)
        with self._progress_bar.epoch(stage.name, epoch) as bar:
            for batch in islice(batches, progress.batches, None):
                if self.distributed is not None:
                    batch = self.distributed.shard(batch)
                batch = batch_to(batch, self.device)
                hyper = self._hyper(epoch)
                self._dispatch("on_step_start", batch, epoch)
                self.optimizer.zero_grad()
                try:
                    with autocast(self.device, self.autocast):
                        out = objective(self.model, batch, hyper)
                except (SiteError, RateModeError):
                    raise  # pyromm's named errors about the programs, as they are
                except ValueError as err:
                    if self.step == 0:
                        raise
                    self._check_finite(window, epoch)
                    self._raise_if_parameters_diverged(err, epoch)
                    raise ValueError(
                        f"step {self.step} (epoch {epoch}, stage {stage.name!r}): {str(err).splitlines()[0]} (Pyro's "
                        "validation; after a diverging update, try a lower learning rate)"
                    ) from err
                _check_output(out)
                if not out.gradients_done:
                    out.loss.backward()
                if self.distributed is not None:
                    out = self.distributed.average(out, self._params)
                record = self._record(out)
                if skip and not bool(record.finite):
                    progress.skipped += 1
                else:
                    if self.grad_clip is not None:
                        nn.utils.clip_grad_norm_(self._params, self.grad_clip)
                    self.optimizer.step()
                    progress.totals.add(out, batch.batch_size)
                    if not skip:
                        window.append(record)
                self.step += 1
                progress.batches += 1
                bar.update()
                if self.log_every_steps and self.step % self.log_every_steps == 0:
                    self._dispatch("on_step_end", self._step_row(out, hyper, epoch, stage.name))
                if len(window) == self.sync_every:
                    self._check_finite(window, epoch)
                    window = []
                if self.progress and progress.batches % self.sync_every == 0:
                    bar.set_postfix(loss=f"{progress.totals.running_loss():.4g}")
                if stop.signum is not None and progress.batches < total:
                    self._check_finite(window, epoch)
                    progress.seconds += time.perf_counter() - start
                    save(progress)
                    stop.exit()
            self._check_finite(window, epoch)
            self.optimizer.end_epoch()
            row: dict[str, Any] = {"epoch": epoch, "stage": stage.name, "step": self.step}
            row.update({f"train/{k}": v for k, v in progress.totals.means().items()})
            if val is not None:
                row.update({f"val/{k}": v for k, v in self._evaluate(objective, val, hyper).items()})
            row.update({f"hyper/{k}": v for k, v in hyper.items()})
            if skip:
                row["skipped_steps"] = progress.skipped
            row["seconds"] = progress.seconds + time.perf_counter() - start
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in ("train/loss", "val/loss")})
        return row

    def _step_row(self, out: ObjectiveOutput, hyper: Mapping[str, float], epoch: int, stage: str) -> dict[str, Any]:
        """The step row of the step just taken (see ``pyromm.train.callbacks``): one host sync reads its loss and
        terms."""
        terms = {"loss": out.loss, **out.terms}
        values = torch.stack([v.detach().reshape(()).double() for v in terms.values()]).tolist()
        row: dict[str, Any] = {"step": self.step, "epoch": epoch, "stage": stage}
        row.update({f"train/{k}": v for k, v in zip(terms, values)})
        row.update({f"hyper/{k}": v for k, v in hyper.items()})
        return row

    def _evaluate(self, objective: Objective, data: MultimodalDataset, hyper: Mapping[str, float]) -> dict[str, float]:
        """Sample-weighted mean loss and terms over ``data`` in eval mode, without gradients (data-parallel: over
        the ranks' shards of ``data``)."""
        self.model.eval()
        if self.distributed is not None:
            data = self.distributed.shard_dataset(data)
        totals = _Totals()
        with torch.no_grad():
            for batch in data.batches(self.batch_size):
                batch = batch_to(batch, self.device)
                with autocast(self.device, self.autocast):
                    out = objective(self.model, batch, hyper)
                _check_output(out)
                totals.add(out, batch.batch_size)
        self.model.train()
        if self.distributed is not None:
            return self.distributed.mean_over_ranks(totals.sums, totals.counts)
        return totals.means()

    def _record(self, out: ObjectiveOutput) -> _StepRecord:
        """The step's loss, terms and per-parameter gradient finiteness, as device tensors (no host sync).

        A gradient is finite when its 2-norm is (the fused norm ``clip_grad_norm_`` uses), so one whose norm
        overflows (entries beyond ~1e19 in float32) counts as non-finite too.
        """
        named = [(name, p.grad) for name, p in zip(self._param_names, self._params) if p.grad is not None]
        names = [name for name, _ in named]
        if named:
            grad_finite = torch.isfinite(torch.stack(torch._foreach_norm([g for _, g in named])))
        else:
            grad_finite = torch.ones(0, dtype=torch.bool, device=out.loss.device)
        loss = out.loss.detach()
        finite = torch.isfinite(loss) & grad_finite.all()
        return _StepRecord(self.step, loss, {k: v.detach() for k, v in out.terms.items()}, names, grad_finite, finite)

    def _raise_if_parameters_diverged(self, err: ValueError, epoch: int) -> None:
        """``FloatingPointError`` naming the first non-finite parameter when the last update made one (Pyro's
        validation then refuses the distributions built from it, ``err``); nothing otherwise. One host sync."""
        for name, param in zip(self._param_names, self._params):
            if not bool(torch.isfinite(param).all()):
                refused = str(err).splitlines()[0]
                raise FloatingPointError(
                    f"non-finite parameter {name!r} at step {self.step} (epoch {epoch}, stage "
                    f"{self.stages[self.stage_index].name!r}) after the previous update; Pyro's validation refused: "
                    f"{refused}"
                ) from err

    def _check_finite(self, window: list[_StepRecord], epoch: int) -> None:
        """Raise ``FloatingPointError`` at the first step of ``window`` whose loss or a gradient is NaN or inf.

        One host sync per call.
        """
        if not window:
            return
        finite = torch.stack([record.finite for record in window])
        if bool(finite.all()):
            return
        record = window[int((~finite).to(torch.uint8).argmax())]
        loss = record.loss.item()
        bad_terms = [k for k, v in record.terms.items() if not bool(torch.isfinite(v).all())]
        bad_grads = [name for name, ok in zip(record.grad_names, record.grad_finite.tolist()) if not ok]
        what = " and ".join(kind for kind, bad in (("loss", not math.isfinite(loss)), ("gradient", bad_grads)) if bad)
        message = (
            f"non-finite {what} at step {record.step} (epoch {epoch}, stage {self.stages[self.stage_index].name!r}); "
            f"loss {loss:.6g}, non-finite terms: {', '.join(bad_terms) or 'none'}"
        )
        if bad_grads:
            message += f"; first parameter with a non-finite gradient: {bad_grads[0]!r}"
        raise FloatingPointError(message)


@dataclass
class _StepRecord:
    """One step's loss and terms, the names of the parameters with a gradient, whether each gradient is
    finite, and whether the whole step is (all device tensors until checked)."""

    step: int
    loss: Tensor
    terms: dict[str, Tensor]
    grad_names: list[str]
    grad_finite: Tensor
    finite: Tensor


def _check_output(out: ObjectiveOutput) -> None:
    if out.loss.dim() != 0:
        raise ValueError(f"objective loss must be a scalar, got shape {tuple(out.loss.shape)}")
    if "loss" in out.terms:
        raise ValueError("objective terms may not be named 'loss'")
    for key, value in out.terms.items():
        if value.numel() != 1:
            raise ValueError(f"objective term {key!r} must be a scalar, got shape {tuple(value.shape)}")


class _Totals:
    """Sample-weighted sums of the loss and the terms, kept on the device until read."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, out: ObjectiveOutput, n: int) -> None:
        for key, value in {"loss": out.loss, **out.terms}.items():
            weighted = value.detach().reshape(()).double() * n
            self.sums[key] = self.sums[key] + weighted if key in self.sums else weighted
            self.counts[key] = self.counts.get(key, 0) + n

    def running_loss(self) -> float:
        return (self.sums["loss"] / self.counts["loss"]).item() if "loss" in self.sums else math.nan

    def means(self) -> dict[str, float]:
        keys = list(self.sums)
        if not keys:
            return {}
        return dict(zip(keys, torch.stack([self.sums[k] / self.counts[k] for k in keys]).tolist()))


@dataclass
class _Progress:
    """How far the epoch in progress has got: batches done, their metric sums, skipped steps and seconds,
    and the data-order generator state the epoch started from."""

    batches: int = 0
    totals: _Totals = field(default_factory=_Totals)
    skipped: int = 0
    seconds: float = 0.0
    generator: Tensor | None = None

    def state(self) -> dict[str, Any]:
        return {
            "sums": dict(self.totals.sums),
            "counts": dict(self.totals.counts),
            "skipped": self.skipped,
            "seconds": self.seconds,
        }

    @classmethod
    def from_state(cls, batches: int, state: Mapping[str, Any], device: torch.device) -> "_Progress":
        totals = _Totals()
        totals.sums = {k: v.to(device) for k, v in state["sums"].items()}
        totals.counts = {k: int(v) for k, v in state["counts"].items()}
        return cls(batches, totals, int(state["skipped"]), float(state["seconds"]))


@contextmanager
def frozen_parameters_unregistered() -> Iterator[None]:
    """Silence ``pyro.module``'s warning for parameters a stage froze (requires_grad=False): leaving them out of
    the param store is what a stage intends."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was not registered in the param store because requires_grad=False")
        yield


def as_objective(objective: Objective | pyro.infer.ELBO) -> Objective:
    """A ``pyro.infer.ELBO`` as an :class:`ELBOObjective` on the model's own programs; an objective as it is."""
    if isinstance(objective, pyro.infer.ELBO):
        return ELBOObjective(objective)
    if not callable(objective):
        raise TypeError(f"objective must be a pyro.infer.ELBO or objective(model, batch, hyper), got {objective!r}")
    return objective


def _check_beta(schedules: Mapping[str, Schedule]) -> None:
    if "beta" not in schedules:
        raise ValueError(f"schedules must include 'beta'; got {sorted(schedules)}")
    low = schedules["beta"].bounds()[0]
    if low < 0:
        raise ValueError(f"schedule 'beta' reaches {low} < 0; beta must be >= 0")


def _resume_mode(resume: str | bool) -> str:
    """``resume`` as one of ``RESUME_MODES`` (True is "auto", False is "never")."""
    if resume is True or resume is False:
        return "auto" if resume else "never"
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES} (or True/False), got {resume!r}")
    return resume


def _at_least_one(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _qualname(obj: Any) -> str:
    named = obj if hasattr(obj, "__qualname__") else type(obj)
    return f"{getattr(named, '__module__', None)}.{named.__qualname__}"


def _to_json(config: Mapping[str, Any]) -> str:
    try:
        return json.dumps(config, indent=2)
    except TypeError as err:
        raise TypeError(f"run config is not JSON-able: {err}") from err
