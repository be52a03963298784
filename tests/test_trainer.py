import csv
import json
import os
import signal
import threading

import pyro
import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from pyromm.data import MultimodalDataset
from pyromm.infer.objective import ObjectiveOutput
from pyromm.train import CheckpointError, CheckpointMismatchError, Cosine, Linear, Stage, Trainer, load_checkpoint

DIMS = {"a": 4, "b": 3}


class ToyVAE(nn.Module):
    """Linear-Gaussian VAE: q(z | a, b) = N(W[a; b], diag exp(log_var)), p(x_m | z) = N(D_m z, 1)."""

    def __init__(self, latent_dim: int = 2) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Linear(sum(DIMS.values()), 2 * latent_dim)
        self.decoders = nn.ModuleDict({m: nn.Linear(latent_dim, d) for m, d in DIMS.items()})

    def config(self) -> dict:
        return {"latent_dim": self.latent_dim}

    def check_batch(self, batch) -> None:
        for name, x in batch.data.items():
            if name not in DIMS:
                raise KeyError(f"unknown modality {name!r}")
            if tuple(x.shape[1:]) != (DIMS[name],):
                raise ValueError(f"modality {name!r} has event shape {tuple(x.shape[1:])}")


def elbo(model, batch, hyper):
    """loss = mean_b [Σ_m -log p(x_m | z) + β KL(q(z | x) || N(0, I))], z ~ q (one sample)."""
    loc, log_var = model.encoder(torch.cat([batch.data[m] for m in DIMS], -1)).chunk(2, -1)
    q = Normal(loc, (0.5 * log_var).exp())
    z = q.rsample()
    rec = sum(-Normal(model.decoders[m](z), 1.0).log_prob(batch.data[m]).sum(-1) for m in DIMS)
    kl = kl_divergence(q, Normal(torch.zeros_like(loc), torch.ones_like(loc))).sum(-1)
    loss = (rec + hyper["beta"] * kl).mean()
    return ObjectiveOutput(loss, {"rec": rec.mean().detach(), "kl": kl.mean().detach()})


def decoder_only(model, batch, hyper):
    """A second-stage objective: reconstruction from the posterior mean."""
    loc, _ = model.encoder(torch.cat([batch.data[m] for m in DIMS], -1)).chunk(2, -1)
    rec = sum(-Normal(model.decoders[m](loc), 1.0).log_prob(batch.data[m]).sum(-1) for m in DIMS)
    return ObjectiveOutput(rec.mean(), {"rec_mean": rec.mean().detach()})


class Crash(Exception):
    pass


class CrashAfter:
    """``elbo`` that raises ``Crash`` on its training call number ``calls`` (0-based)."""

    def __init__(self, calls: int, objective=elbo) -> None:
        self.calls, self.objective, self.count = calls, objective, 0

    def __call__(self, model, batch, hyper):
        if model.training:
            if self.count == self.calls:
                raise Crash
            self.count += 1
        return self.objective(model, batch, hyper)


def dataset(n: int = 40, seed: int = 0) -> MultimodalDataset:
    g = torch.Generator().manual_seed(seed)
    return MultimodalDataset({m: torch.randn(n, d, generator=g) for m, d in DIMS.items()})


def toy(seed: int = 0, latent_dim: int = 2) -> ToyVAE:
    torch.manual_seed(seed)
    return ToyVAE(latent_dim)


def trainer(model, objective=elbo, **kwargs) -> Trainer:
    options = dict(batch_size=8, epochs=4, progress=False, schedules={"beta": Linear(0.0, 1.0, 10)}, lr=1e-2)
    options.update(kwargs)
    return Trainer(model, objective, **options)


def epochs_logged(run_dir) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_parameters(a: nn.Module, b: nn.Module) -> None:
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), name


def test_fit_logs_metrics_and_config(tmp_path):
    model = toy()
    history = trainer(model, run_dir=tmp_path, config={"experiment": "toy"}).fit(dataset(), dataset(16, seed=1))
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[-1]["step"] == 4 * 5
    assert {"train/loss", "train/rec", "train/kl", "val/loss", "val/kl", "hyper/beta", "seconds"} <= set(history[0])
    assert history[0]["hyper/beta"] == pytest.approx(0.4)
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["experiment"] == "toy" and config["model"] == {"latent_dim": 2}
    assert config["trainer"]["schedules"]["beta"] == {"kind": "linear", "init": 0.0, "final": 1.0, "steps": 10}
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert list(rows[0]) == list(history[0])
    assert float(rows[2]["train/loss"]) == history[2]["train/loss"]
    saved = load_checkpoint(tmp_path / "checkpoints" / "epoch-00004.pt")
    assert json.loads(saved["config"]) == config
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-00003.pt", "epoch-00004.pt"]


def test_resume_is_bit_identical(tmp_path):
    train, val = dataset(), dataset(16, seed=1)
    reference = toy()
    expected = trainer(reference, run_dir=tmp_path / "ref").fit(train, val)

    run = tmp_path / "run"
    trainer(toy(), run_dir=run, epochs=2).fit(train, val)
    resumed = toy(seed=123)
    history = trainer(resumed, run_dir=run).fit(train, val)
    assert_same_parameters(reference, resumed)
    assert epochs_logged(run) == [1, 2, 3, 4]
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(history) == drop(expected)


def test_crash_after_logging_drops_rows_past_the_checkpoint(tmp_path):
    train = dataset()
    reference = toy()
    trainer(reference, run_dir=tmp_path / "ref", epochs=5).fit(train)

    run = tmp_path / "run"
    with pytest.raises(Crash):
        trainer(toy(), CrashAfter(3 * 5 + 2), run_dir=run, epochs=5, checkpoint_every=2).fit(train)
    assert epochs_logged(run) == [1, 2, 3]
    resumed = toy(seed=7)
    trainer(resumed, run_dir=run, epochs=5, checkpoint_every=2).fit(train)
    assert_same_parameters(reference, resumed)
    assert epochs_logged(run) == [1, 2, 3, 4, 5]
    with open(run / "metrics.csv", newline="") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [1, 2, 3, 4, 5]


def test_resume_from_another_model_raises(tmp_path):
    trainer(toy(), run_dir=tmp_path, epochs=1).fit(dataset())
    with pytest.raises(CheckpointMismatchError, match=r"decoders\.a\.weight.*\(4, 2\).*\(4, 3\)"):
        trainer(toy(latent_dim=3), run_dir=tmp_path).fit(dataset())
    assert json.loads((tmp_path / "config.json").read_text())["model"] == {"latent_dim": 2}
    assert epochs_logged(tmp_path) == [1]


def test_resume_false_starts_over(tmp_path):
    trainer(toy(), run_dir=tmp_path, epochs=3).fit(dataset())
    with pytest.raises(ValueError, match="epoch 3 but this run has 2 epochs"):
        trainer(toy(), run_dir=tmp_path, epochs=2).fit(dataset())
    model = toy()
    trainer(model, run_dir=tmp_path, epochs=2, resume=False).fit(dataset())
    reference = toy()
    trainer(reference, epochs=2).fit(dataset())
    assert_same_parameters(reference, model)
    assert epochs_logged(tmp_path) == [1, 2]
    assert load_checkpoint(tmp_path / "checkpoints" / "epoch-00002.pt")["epoch"] == 2
    assert not (tmp_path / "checkpoints" / "epoch-00003.pt").exists()


@pytest.mark.parametrize("beta", [-0.5, Linear(1.0, -1.0, 100), Cosine(-0.1, 1.0, 5)])
def test_negative_beta_raises_before_any_step(beta):
    calls = CrashAfter(0)
    with pytest.raises(ValueError, match="beta"):
        trainer(toy(), calls, schedules={"beta": beta}).fit(dataset())
    with pytest.raises(ValueError, match="beta"):
        trainer(toy(), schedules={"alpha": 1.0})


def test_bad_first_batch_fails_before_training():
    bad = MultimodalDataset({"a": torch.randn(16, 4), "b": torch.randn(16, 5)})
    model = toy()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="'b'"):
        trainer(model, CrashAfter(0)).fit(bad)
    with pytest.raises(KeyError, match="'c'"):
        trainer(model, CrashAfter(0)).fit(dataset(), MultimodalDataset({"c": torch.randn(4, 4)}))
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))


def test_non_finite_loss_names_step_and_terms():
    def nan_at_step_6(model, batch, hyper):
        out = elbo(model, batch, hyper)
        nan_at_step_6.calls += 1
        if nan_at_step_6.calls == 7:
            kl = torch.tensor(float("nan"))
            return ObjectiveOutput(out.loss + kl, {**out.terms, "kl": kl})
        return out

    nan_at_step_6.calls = 0
    with pytest.raises(FloatingPointError, match=r"step 6 .*epoch 2.*kl"):
        trainer(toy(), nan_at_step_6).fit(dataset())


def test_two_stages_freeze_and_resume(tmp_path):
    train = dataset()

    def stages(second=decoder_only):
        return [
            Stage("joint", 2),
            Stage("decoders", 2, objective=second, trainable=lambda m: m.decoders.parameters(), reset_optimizer=False),
        ]

    model = toy()
    history = trainer(model, run_dir=tmp_path / "ref", stages=stages(), keep_last=None).fit(train)
    assert [(r["epoch"], r["stage"]) for r in history] == [(1, "joint"), (2, "joint"), (3, "decoders"), (4, "decoders")]
    assert "train/rec_mean" in history[2] and "train/kl" not in history[2]
    after_joint = load_checkpoint(tmp_path / "ref" / "checkpoints" / "epoch-00002.pt")["model"]
    for name, p in model.named_parameters():
        assert torch.equal(p, after_joint[name]) == name.startswith("encoder"), name
        assert p.requires_grad
    with open(tmp_path / "ref" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["train/rec_mean"] == "" and float(rows[3]["train/rec_mean"]) == history[3]["train/rec_mean"]

    run = tmp_path / "run"
    with pytest.raises(Crash):
        trainer(toy(), run_dir=run, stages=stages(CrashAfter(0, decoder_only))).fit(train)
    assert load_checkpoint(run / "checkpoints" / "epoch-00002.pt")["stage"] == 0
    resumed = toy(seed=5)
    trainer(resumed, run_dir=run, stages=stages()).fit(train)
    assert_same_parameters(model, resumed)
    assert epochs_logged(run) == [1, 2, 3, 4]


def test_options_progress_and_pyro_validation(tmp_path, capsys):
    seen = []

    def recording(model, batch, hyper):
        seen.append((pyro.infer.util.is_validation_enabled(), dict(hyper)))
        return elbo(model, batch, hyper)

    pyro.enable_validation(True)
    model = toy()
    history = trainer(
        model,
        recording,
        optimizer=torch.optim.SGD,
        optimizer_kwargs={"momentum": 0.9},
        schedules={"beta": 1.0, "alpha": Cosine(1.0, 0.0, 5)},
        grad_clip=1.0,
        progress=True,
        epochs=2,
        drop_last=False,
        batch_size=16,
    ).fit(dataset(40))
    assert pyro.infer.util.is_validation_enabled()
    assert all(flag for flag, _ in seen), "Pyro validation is on in the steps by default"
    assert [h["alpha"] for _, h in seen] == pytest.approx([Cosine(1.0, 0.0, 5)(t, 1) for t in range(6)])
    assert history[-1]["step"] == 6 and history[-1]["hyper/alpha"] == 0.0
    assert "loss=" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown optimizer"):
        trainer(model, optimizer="nope")


class SignalAt:
    """``elbo`` that sends ``signum`` to this process during training call ``calls`` (0-based)."""

    def __init__(self, calls: int, signum: int, objective=elbo, training: bool = True) -> None:
        self.calls, self.signum, self.objective, self.training, self.count = calls, signum, objective, training, 0

    def __call__(self, model, batch, hyper):
        if model.training == self.training:
            if self.count == self.calls:
                os.kill(os.getpid(), self.signum)
            self.count += 1
        return self.objective(model, batch, hyper)


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.mark.parametrize("signum, exit_type", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, SystemExit)])
def test_stop_signal_mid_epoch_checkpoints_the_step_and_resumes_bit_identical(tmp_path, signum, exit_type):
    train, val = dataset(), dataset(16, seed=1)
    reference = toy()
    expected = trainer(reference, run_dir=tmp_path / "ref").fit(train, val)

    run = tmp_path / "run"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(exit_type) as raised:
        trainer(toy(), SignalAt(7, signum), run_dir=run).fit(train, val)
    if exit_type is SystemExit:
        assert raised.value.code == 128 + signum
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-00001-batch-000003.pt", "epoch-00001.pt"]
    partial = load_checkpoint(run / "checkpoints" / "epoch-00001-batch-000003.pt")
    assert (partial["epoch"], partial["batch"], partial["step"]) == (1, 3, 8)
    assert epochs_logged(run) == [1]
    resumed = toy(seed=9)
    history = trainer(resumed, run_dir=run).fit(train, val)
    assert_same_parameters(reference, resumed)
    assert epochs_logged(run) == [1, 2, 3, 4]
    assert without_seconds(history) == without_seconds(expected)


def test_stop_signal_after_the_last_step_of_an_epoch_writes_an_epoch_checkpoint(tmp_path):
    train, val = dataset(), dataset(16, seed=1)
    reference = toy()
    trainer(reference, epochs=3).fit(train, val)
    run = tmp_path / "run"
    with pytest.raises(SystemExit, match=str(128 + signal.SIGTERM)):
        trainer(toy(), SignalAt(0, signal.SIGTERM, training=False), run_dir=run, epochs=3, checkpoint_every=3).fit(
            train, val
        )
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["epoch-00001.pt"]
    resumed = toy(seed=2)
    trainer(resumed, run_dir=run, epochs=3, checkpoint_every=3).fit(train, val)
    assert_same_parameters(reference, resumed)
    assert epochs_logged(run) == [1, 2, 3]


def test_no_signal_handlers_outside_the_main_thread_or_without_run_dir(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def recording(model, batch, hyper):
        seen.append(signal.getsignal(signal.SIGTERM))
        return elbo(model, batch, hyper)

    histories = []
    worker = threading.Thread(
        target=lambda: histories.append(trainer(toy(), recording, run_dir=tmp_path, epochs=1).fit(dataset()))
    )
    worker.start()
    worker.join()
    assert len(histories) == 1 and set(seen) == {before}
    trainer(toy(), recording, epochs=1).fit(dataset())
    assert set(seen) == {before}
    trainer(toy(), recording, run_dir=tmp_path / "main", epochs=1).fit(dataset())
    assert seen[-1] != before and signal.getsignal(signal.SIGTERM) == before


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    train = dataset()
    reference = toy()
    trainer(reference).fit(train)
    run = tmp_path / "run"
    trainer(toy(), run_dir=run, epochs=3).fit(train)
    latest = run / "checkpoints" / "epoch-00003.pt"
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])
    resumed = toy(seed=4)
    with pytest.warns(UserWarning, match=r"epoch-00003\.pt.*falling back to epoch-00002\.pt") as caught:
        trainer(resumed, run_dir=run).fit(train)
    assert len([w for w in caught if "falling back" in str(w.message)]) == 1
    assert_same_parameters(reference, resumed)
    assert epochs_logged(run) == [1, 2, 3, 4]
    assert (run / "checkpoints" / "epoch-00003.pt.corrupt").exists()
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == ["epoch-00003.pt", "epoch-00004.pt"]

    for path in (run / "checkpoints").glob("*.pt"):
        path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint.*epoch-00004\.pt.*epoch-00003\.pt"):
        trainer(toy(), run_dir=run).fit(train)


def test_validate_false_turns_pyro_validation_off_in_the_steps_only():
    seen = []

    def recording(model, batch, hyper):
        seen.append(pyro.infer.util.is_validation_enabled())
        return elbo(model, batch, hyper)

    pyro.enable_validation(True)
    trainer(toy(), recording, epochs=1, batch_size=16, validate=False).fit(dataset(32))
    assert seen and not any(seen)
    assert pyro.infer.util.is_validation_enabled()
