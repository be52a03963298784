"""Trainer callbacks: event order, per-step logging, early stopping, TensorBoard files, the run's progress bar."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.distributions import Normal, kl_divergence

from pyromm.cli import main
from pyromm.config import ConfigError, RunConfig
from pyromm.data import MultimodalDataset, complete_only
from pyromm.infer.objective import ObjectiveOutput
from pyromm.run import build_callbacks, load_data, split_validation, train
from pyromm.train import (
    Callback,
    EarlyStopping,
    EpochWarmup,
    Linear,
    Stage,
    StepLog,
    TensorBoard,
    Trainer,
    load_checkpoint,
    read_jsonl,
)

DIMS = {"a": 4, "b": 3}


class ToyVAE(nn.Module):
    """q(z | a, b) = N(W[a; b], diag exp(log_var)), p(x_m | z) = N(D_m z, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(sum(DIMS.values()), 4)
        self.decoders = nn.ModuleDict({m: nn.Linear(2, d) for m, d in DIMS.items()})


class FlatVAE(ToyVAE):
    """``ToyVAE`` with the names of the inference contract, over modalities that are not images."""

    modality_names = list(DIMS)

    def infer(self, batch, subset):
        raise AssertionError("no generation grid is drawn for flat modalities")

    def decode(self, name, z):
        raise AssertionError("no generation grid is drawn for flat modalities")


def elbo(model, batch, hyper):
    """loss = mean_b [Σ_m -log p(x_m | z) + β KL(q(z | x) || N(0, I))], z ~ q."""
    loc, log_var = model.encoder(torch.cat([batch.data[m] for m in DIMS], -1)).chunk(2, -1)
    q = Normal(loc, (0.5 * log_var).exp())
    z = q.rsample()
    rec = sum(-Normal(model.decoders[m](z), 1.0).log_prob(batch.data[m]).sum(-1) for m in DIMS)
    kl = kl_divergence(q, Normal(torch.zeros_like(loc), torch.ones_like(loc))).sum(-1)
    return ObjectiveOutput((rec + hyper["beta"] * kl).mean(), {"rec": rec.mean().detach(), "kl": kl.mean().detach()})


class ScriptedValidation:
    """``elbo`` in training; in eval mode the loss ``script[e - 1]`` of epoch e (read from the ``epoch`` hyper)."""

    def __init__(self, script: list[float]) -> None:
        self.script = script

    def __call__(self, model, batch, hyper):
        if model.training:
            return elbo(model, batch, hyper)
        epoch = round(hyper["epoch"])
        return ObjectiveOutput(torch.tensor(self.script[epoch - 1]), {})


class CrashAfter:
    """``objective`` that raises ``RuntimeError`` on its training call number ``calls`` (0-based)."""

    def __init__(self, calls: int, objective) -> None:
        self.calls, self.objective, self.count = calls, objective, 0

    def __call__(self, model, batch, hyper):
        if model.training:
            if self.count == self.calls:
                raise RuntimeError("crash")
            self.count += 1
        return self.objective(model, batch, hyper)


class Recorder(Callback):
    """Records every event as a tuple."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_fit_start(self, trainer, train, val):
        self.events.append(("fit_start", trainer.step))

    def on_stage_start(self, trainer, stage):
        self.events.append(("stage_start", stage.name))

    def on_step_end(self, trainer, row):
        self.events.append(("step", row["step"]))

    def on_epoch_end(self, trainer, row):
        self.events.append(("epoch", row["epoch"]))

    def on_stage_end(self, trainer, stage):
        self.events.append(("stage_end", stage.name))

    def on_fit_end(self, trainer):
        self.events.append(("fit_end",))


def dataset(n: int = 40, seed: int = 0) -> MultimodalDataset:
    g = torch.Generator().manual_seed(seed)
    return MultimodalDataset({m: torch.randn(n, d, generator=g) for m, d in DIMS.items()})


def trainer(objective=elbo, seed: int = 0, **kwargs) -> Trainer:
    """5 steps per epoch on ``dataset()``; the ``epoch`` hyper is the epoch number e (1000·min(1, e/1000))."""
    torch.manual_seed(seed)
    options = dict(
        batch_size=8, epochs=4, progress=False, lr=1e-2,
        schedules={"beta": Linear(0.0, 1.0, 10), "epoch": EpochWarmup(1000.0, 1000)},
    )
    options.update(kwargs)
    return Trainer(ToyVAE(), objective, **options)


def test_events_arrive_in_order_across_stages():
    recorder = Recorder()
    stages = [Stage("warmup", 1), Stage("main", 2)]
    trainer(stages=stages, callbacks=[recorder], log_every_steps=4).fit(dataset())
    expected = [
        ("fit_start", 0),
        ("stage_start", "warmup"), ("step", 4), ("epoch", 1), ("stage_end", "warmup"),
        ("stage_start", "main"), ("step", 8), ("epoch", 2), ("step", 12), ("epoch", 3), ("stage_end", "main"),
        ("fit_end",),
    ]
    assert recorder.events == expected


def test_a_stop_can_be_requested_from_on_epoch_end_only():
    class StopAtStep(Callback):
        def on_step_end(self, trainer, row):
            trainer.request_stop("run", "too early")

    with pytest.raises(RuntimeError, match="request_stop was called from on_step_end; call it from on_epoch_end"):
        trainer(callbacks=[StopAtStep()], log_every_steps=1).fit(dataset())
    with pytest.raises(RuntimeError, match="outside the callbacks"):
        trainer().request_stop("run", "no")
    with pytest.raises(ValueError, match="scope must be one of"):
        trainer().request_stop("epoch", "no")


def test_a_callback_without_the_event_methods_is_refused():
    with pytest.raises(TypeError, match=r"callbacks\[1\] \(object\) has no on_fit_start.*subclass"):
        trainer(callbacks=[Callback(), object()])
    with pytest.raises(ValueError, match="log_every_steps"):
        trainer(log_every_steps=-1)


def test_step_rows_are_every_kth_step_with_that_steps_loss_and_hyper(tmp_path):
    losses = []

    def recording(model, batch, hyper):
        out = elbo(model, batch, hyper)
        if model.training:
            losses.append(out.loss.item())
        return out

    recorder = Recorder()
    history = trainer(recording, epochs=2, run_dir=tmp_path, log_every_steps=3, callbacks=[recorder]).fit(dataset())
    rows = read_jsonl(tmp_path / "steps.jsonl")
    assert [(r["step"], r["epoch"], r["stage"]) for r in rows] == [(3, 1, "train"), (6, 2, "train"), (9, 2, "train")]
    assert [r["train/loss"] for r in rows] == pytest.approx([losses[2], losses[5], losses[8]], rel=1e-6)
    assert [r["hyper/beta"] for r in rows] == pytest.approx([Linear(0.0, 1.0, 10)(s - 1, 1) for s in (3, 6, 9)])
    assert {"train/rec", "train/kl", "hyper/epoch"} <= set(rows[0])
    assert [e for e in recorder.events if e[0] == "step"] == [("step", 3), ("step", 6), ("step", 9)]
    assert history[-1]["step"] == 10


def test_step_log_resumes_without_duplicates_and_skips_a_partial_last_line(tmp_path):
    train = dataset()
    trainer(epochs=4, run_dir=tmp_path / "ref", log_every_steps=3).fit(train)
    expected = read_jsonl(tmp_path / "ref" / "steps.jsonl")
    assert [r["step"] for r in expected] == [3, 6, 9, 12, 15, 18]

    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crash"):
        trainer(CrashAfter(13, elbo), epochs=4, run_dir=run, log_every_steps=3).fit(train)  # in epoch 3, at step 14
    with open(run / "steps.jsonl", "a") as handle:
        handle.write('{"step": 9')  # a crash mid-write
    assert [r["step"] for r in read_jsonl(run / "steps.jsonl")] == [3, 6, 9, 12]
    trainer(epochs=4, run_dir=run, log_every_steps=3, seed=1).fit(train)  # resumes after epoch 2 (step 10)
    assert read_jsonl(run / "steps.jsonl") == expected


def test_early_stopping_stops_a_run_whose_validation_loss_rises(tmp_path):
    rising = ScriptedValidation([3.0, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0])
    history = trainer(rising, epochs=10, run_dir=tmp_path, callbacks=[EarlyStopping(patience=2)]).fit(
        dataset(), dataset(8, seed=1)
    )
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert [row["val/loss"] for row in history] == [3.0, 2.0, 2.5, 3.0]
    assert history[-1]["stop"] == "stage" and "best 2 at epoch 2" in history[-1]["stop_reason"]
    assert all("stop" not in row for row in history[:-1])
    logged = read_jsonl(tmp_path / "metrics.jsonl")
    assert [(r["epoch"], r.get("stop")) for r in logged] == [(1, None), (2, None), (3, None), (4, "stage")]
    saved = load_checkpoint(tmp_path / "checkpoints" / "epoch-00010.pt")  # the stop counts as the end of the run
    assert saved["step"] == 4 * 5 and saved["callbacks"]["EarlyStopping"] == {"best": 2.0, "best_epoch": 2, "wait": 2}
    # a second fit resumes after the end: nothing more runs
    again = trainer(rising, epochs=10, run_dir=tmp_path, callbacks=[EarlyStopping(patience=2)]).fit(
        dataset(), dataset(8, seed=1)
    )
    assert again == logged


@pytest.mark.parametrize("min_delta, stopped", [(0.0, []), (0.15, [3])])
def test_early_stopping_min_delta(min_delta, stopped):
    """Falling by 0.1 an epoch improves by more than min_delta = 0, but not by more than 0.15 (epoch 3: 4.7 > 4.65)."""
    slow = ScriptedValidation([5.0, 4.8, 4.7, 4.6, 4.5, 4.4])
    history = trainer(slow, epochs=6, callbacks=[EarlyStopping(patience=1, min_delta=min_delta)]).fit(
        dataset(), dataset(8, seed=1)
    )
    assert [row["epoch"] for row in history if "stop" in row] == stopped
    assert history[-1]["epoch"] == (stopped or [6])[0]


def test_early_stopping_state_survives_a_crash(tmp_path):
    rising = ScriptedValidation([3.0, 2.0, 2.5, 3.0, 2.9, 2.8, 2.7, 2.6, 2.5, 2.4])
    train, val = dataset(), dataset(8, seed=1)
    with pytest.raises(RuntimeError, match="crash"):  # in epoch 4, after the checkpoint of epoch 3 (wait = 1)
        trainer(CrashAfter(17, rising), epochs=10, run_dir=tmp_path, callbacks=[EarlyStopping(2)]).fit(train, val)
    history = trainer(rising, epochs=10, run_dir=tmp_path, callbacks=[EarlyStopping(2)]).fit(train, val)
    # a fresh count would take epoch 4 as its best and stop at epoch 10
    assert [row["epoch"] for row in history] == [1, 2, 3, 4] and history[-1]["stop"] == "stage"


def test_a_stopped_stage_hands_over_to_the_next_and_resumes_there(tmp_path):
    script = [3.0, 2.0, 2.5, 3.0, 9.0, 1.0, 0.9, 0.8]
    stages = [Stage("joint", 5), Stage("flows", 3)]
    train, val = dataset(), dataset(8, seed=1)

    def run(run_dir, objective, recorder=None):
        callbacks = [EarlyStopping(2)] + ([recorder] if recorder else [])
        staged = trainer(objective, stages=stages, run_dir=run_dir, restore_best=True, callbacks=callbacks)
        return staged.fit(train, val)

    recorder = Recorder()
    history = run(tmp_path / "ref", ScriptedValidation(script), recorder)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 6, 7, 8]
    assert [row["stage"] for row in history] == ["joint"] * 4 + ["flows"] * 3
    assert history[3]["stop"] == "stage" and history[3]["best_epoch"] == 2
    assert [row["step"] for row in history] == [5, 10, 15, 20, 25, 30, 35]
    assert [e for e in recorder.events if e[0].startswith("stage")] == [
        ("stage_start", "joint"), ("stage_end", "joint"), ("stage_start", "flows"), ("stage_end", "flows")
    ]
    with pytest.raises(RuntimeError, match="crash"):  # in epoch 6, the first of stage "flows"
        run(tmp_path / "run", CrashAfter(22, ScriptedValidation(script)))
    resumed = run(tmp_path / "run", ScriptedValidation(script))
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(resumed) == drop(history)


def test_early_stopping_needs_a_validation_set_and_sane_settings():
    with pytest.raises(ValueError, match="needs a validation set"):
        trainer(callbacks=[EarlyStopping(2)]).fit(dataset())
    for bad in (dict(patience=0), dict(patience=2, min_delta=-1.0), dict(patience=2, scope="epoch")):
        with pytest.raises(ValueError):
            EarlyStopping(**bad)


def test_scope_run_ends_every_stage():
    script = [3.0, 2.0, 2.5, 3.0, 9.0, 1.0]
    stages = [Stage("joint", 4), Stage("flows", 2)]
    history = trainer(ScriptedValidation(script), stages=stages, callbacks=[EarlyStopping(2, scope="run")]).fit(
        dataset(), dataset(8, seed=1)
    )
    assert [row["epoch"] for row in history] == [1, 2, 3, 4] and history[-1]["stop"] == "run"


def test_one_progress_bar_names_the_run_and_stage(tmp_path, capsys):
    stages = [Stage("warmup", 1), Stage("main", 2)]
    trainer(stages=stages, run_dir=tmp_path / "my-run", progress=True).fit(dataset())
    err = capsys.readouterr().err
    assert "my-run | warmup | epoch 1/3" in err and "my-run | main | epoch 3/3" in err
    assert "15/15" in err and "loss=" in err
    assert err.count("\n") == 1, "one bar, redrawn in place, ends with one newline"


def tensorboard_events(log_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_tensorboard_resume_purges_the_events_after_the_checkpoint(tmp_path):
    train, val = dataset(), dataset(8, seed=1)
    options = dict(epochs=4, run_dir=tmp_path, checkpoint_every=2, log_every_steps=5)
    with pytest.raises(RuntimeError, match="crash"):  # in epoch 4, after epoch 3 was logged but not checkpointed
        trainer(CrashAfter(17, elbo), callbacks=[TensorBoard(images=0)], **options).fit(train, val)
    history = trainer(callbacks=[TensorBoard(images=0)], **options).fit(train, val)
    events = tensorboard_events(tmp_path / "tensorboard")
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [
        (row["step"], pytest.approx(row["train/loss"], rel=1e-6)) for row in history
    ]
    assert [e.step for e in events.Scalars("step/train/loss")] == [5, 10, 15, 20]
    assert [e.value for e in events.Scalars("epoch")] == [1, 2, 3, 4]


def test_tensorboard_needs_the_inference_contract_for_images_and_the_package(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="has no modality_names, infer, decode; pass images=0"):
        trainer(run_dir=tmp_path, callbacks=[TensorBoard()]).fit(dataset())
    with pytest.raises(ValueError, match="TensorBoard writes to the run directory"):
        trainer(callbacks=[TensorBoard(images=0)]).fit(dataset())
    flat = Trainer(FlatVAE(), elbo, epochs=1, batch_size=8, run_dir=tmp_path / "flat", progress=False,
                   callbacks=[TensorBoard()])
    with pytest.warns(UserWarning, match=r"event shapes \{'a': \(4,\), 'b': \(3,\)\}: no generation grids"):
        flat.fit(dataset())
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"pyromm\[tensorboard\]"):
        TensorBoard()


@pytest.fixture
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_cli_train_writes_tensorboard_scalars_images_and_step_rows(tmp_path, monkeypatch, restore_torch_threads):
    monkeypatch.setenv("PYROMM_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    settings = {"epochs": 2, "hidden": [32], "train_limit": 400, "val_fraction": 0.1, "tensorboard": True,
                "log_every_steps": 2}
    overrides = [arg for key, value in settings.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    assert main(["train", *overrides, "--out", str(run_dir), "--no-eval", "--no-progress", "--threads", "1"]) == 0

    rows = read_jsonl(run_dir / "metrics.jsonl")
    steps = read_jsonl(run_dir / "steps.jsonl")
    assert [r["step"] for r in rows] == [2, 4] and [r["step"] for r in steps] == [2, 4]  # 360 // 128 = 2 a epoch
    events = tensorboard_events(run_dir / "tensorboard")
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "hyper/beta", "epoch", "step/train/loss", "step/hyper/beta"} <= scalars
    for key in ("train/loss", "val/loss"):
        assert [(e.step, e.value) for e in events.Scalars(key)] == [
            (r["step"], pytest.approx(r[key], rel=1e-6)) for r in rows
        ]
    assert [e.value for e in events.Scalars("step/train/loss")] == pytest.approx([r["train/loss"] for r in steps])

    cfg = RunConfig(**settings)
    _, val = split_validation(load_data(cfg)[0], cfg.val_fraction, cfg.seed)
    shown = complete_only(val).batch(slice(0, 4))
    assert sorted(events.Tags()["images"]) == ["generation/m0", "generation/m1", "generation/m2"]
    for name in ("m0", "m1", "m2"):
        images = events.Images(f"generation/{name}")
        assert [e.step for e in images] == [2, 4]
        assert (images[0].height, images[0].width) == (4 * 10 - 2, 4 * 10 - 2)  # data + 3 sources, 4 samples of 8x8
        pixels = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)).convert("L"))
        padded = [np.pad(x[0].numpy(), ((0, 0), (0, 2)), constant_values=1.0) for x in shown.data[name]]
        first_row = np.concatenate(padded, 1)
        assert np.abs(pixels[:8, :] / 255.0 - first_row[:, :-2]).max() <= 1.5 / 255
        assert (pixels[8:10] == 255).all(), "a white gap between the data row and the first generated row"


def test_run_config_wires_the_callbacks():
    assert build_callbacks(RunConfig()) == []
    callbacks = build_callbacks(RunConfig(tensorboard=True, early_stopping_patience=3, val_fraction=0.1))
    assert [type(c) for c in callbacks] == [TensorBoard, EarlyStopping] and callbacks[1].patience == 3
    with pytest.raises(ConfigError, match="early_stopping_patience needs a validation split"):
        RunConfig(early_stopping_patience=3)
    with pytest.raises(ConfigError, match="early_stopping_patience"):
        RunConfig(early_stopping_patience=0, val_fraction=0.1)
    with pytest.raises(ConfigError, match="log_every_steps"):
        RunConfig(log_every_steps=-1)


def test_a_step_log_given_by_the_user_is_not_doubled(tmp_path):
    mine = StepLog(tmp_path / "elsewhere.jsonl")
    run = trainer(epochs=1, run_dir=tmp_path / "run", log_every_steps=5, callbacks=[mine])
    assert run.callbacks == [mine]
    run.fit(dataset())
    assert [r["step"] for r in read_jsonl(tmp_path / "elsewhere.jsonl")] == [5]
    assert not (tmp_path / "run" / "steps.jsonl").exists()


def test_tensorboard_grids_leave_training_unchanged(tmp_path, restore_torch_threads):
    torch.set_num_threads(1)
    cfg = RunConfig(epochs=2, hidden=[16], train_limit=200, batch_size=64, val_fraction=0.1, log_every_steps=1)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    _, plain, _, _ = train(cfg, tmp_path / "plain", progress=False)
    _, watched, _, _ = train(cfg.replace(tensorboard=True), tmp_path / "watched", progress=False)
    assert drop(watched) == drop(plain)
    assert read_jsonl(tmp_path / "watched" / "steps.jsonl") == read_jsonl(tmp_path / "plain" / "steps.jsonl")
    assert len(tensorboard_events(tmp_path / "watched" / "tensorboard").Images("generation/m0")) == 2
