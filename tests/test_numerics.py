"""Non-finite losses and gradients in the trainer, and training at numerical extremes without NaN."""
import math
import os
import re
import signal

import pytest
import torch

from pyromm.data import MultimodalDataset
from pyromm.infer import ELBOObjective, RateELBO
from pyromm.infer.objective import ObjectiveOutput
from pyromm.likelihoods import Laplace
from pyromm.models import Modality, mmvm_vae
from pyromm.nn import MLPDecoder, MLPEncoder
from pyromm.train import Trainer, load_checkpoint

NAMES = ("m0", "m1")
DIM = 3
SAMPLES, BATCH = 16, 4  # 4 steps per epoch


def model_of(latent_dim=2, scale=0.75, seed=0):
    torch.manual_seed(seed)
    nets = {m: (MLPEncoder(DIM, latent_dim, hidden=(8,)), MLPDecoder(latent_dim, DIM, hidden=(8,))) for m in NAMES}
    return mmvm_vae([Modality(m, *nets[m], Laplace(1, scale), (DIM,)) for m in NAMES], latent_dim)


def data_of(n=SAMPLES):
    g = torch.Generator().manual_seed(1)
    return MultimodalDataset({m: torch.randn(n, DIM, generator=g) for m in NAMES})


def trainer_of(model, objective, **kwargs):
    """A trainer with Pyro's validation off, so that the injected NaNs reach the trainer's own checks."""
    options = dict(batch_size=BATCH, epochs=2, lr=1e-2, progress=False, schedules={"beta": 1.0}, validate=False)
    options.update(kwargs)
    return Trainer(model, objective, **options)


class Faulty:
    """The jensen ELBO; at the given training steps, ``nan_terms`` makes that term (and the loss) NaN and
    ``nan_grads`` makes the gradient of those parameters NaN; at step ``interrupt_at`` it sends SIGINT."""

    def __init__(self, model, nan_terms=None, nan_grads=None, interrupt_at=None):
        self.elbo, self.step, self.interrupt_at = ELBOObjective(RateELBO("jensen")), -1, interrupt_at
        self.nan_terms, self.nan_grads = nan_terms or {}, nan_grads or {}
        self.before = {}
        params = dict(model.named_parameters())
        for step, names in self.nan_grads.items():
            for name in names:
                params[name].register_hook(lambda g, step=step: g * math.nan if self.step == step else g)

    def __call__(self, model, batch, hyper):
        if model.training:
            self.step += 1
            self.before[self.step] = [p.detach().clone() for p in model.parameters()]
            if self.step == self.interrupt_at:
                os.kill(os.getpid(), signal.SIGINT)
        out = self.elbo(model, batch, hyper)
        term = self.nan_terms.get(self.step) if model.training else None
        if term is None:
            return out
        nan = torch.tensor(math.nan)
        return ObjectiveOutput(out.loss + nan, {**out.terms, term: nan})


def test_nan_loss_names_the_step_and_the_term():
    model = model_of()
    expected = "non-finite loss at step 5 (epoch 2, stage 'train'); loss nan, non-finite terms: rate/m1"
    with pytest.raises(FloatingPointError, match=f"^{re.escape(expected)}$"):
        trainer_of(model, Faulty(model, nan_terms={5: "rate/m1"})).fit(data_of())


def test_nan_gradient_names_the_first_parameter():
    model = model_of()
    faulty = Faulty(model, nan_grads={2: ["decoders.m1.out.weight", "encoders.m0.loc.weight"]})
    pattern = (
        r"^non-finite gradient at step 2 \(epoch 1, stage 'train'\); loss -?\d+(\.\d+)?(e[+-]\d+)?, "
        r"non-finite terms: none; first parameter with a non-finite gradient: 'encoders\.m0\.loc\.weight'$"
    )
    with pytest.raises(FloatingPointError, match=pattern):
        trainer_of(model, faulty).fit(data_of())


def test_overflowing_posterior_names_every_non_finite_term_and_the_gradient():
    model = model_of()
    step = [0]

    def infinite_variance_at_step_2(module, inputs, output):
        return (output[0], output[1] + math.inf) if module.training and step[0] == 2 else output

    model.encoders["m1"].register_forward_hook(infinite_variance_at_step_2)
    elbo = ELBOObjective(RateELBO("jensen"))

    def objective(model, batch, hyper):
        out = elbo(model, batch, hyper)
        step[0] += model.training
        return out

    expected = (
        "non-finite loss and gradient at step 2 (epoch 1, stage 'train'); loss nan, non-finite terms: "
        "rate/m0, rate/m1, rec/m1; first parameter with a non-finite gradient: 'encoders.m0.body.0.weight'"
    )
    with pytest.raises(FloatingPointError, match=f"^{re.escape(expected)}$"):
        trainer_of(model, objective).fit(data_of())


def test_raise_keeps_the_last_good_checkpoint(tmp_path):
    model = model_of()
    with pytest.raises(FloatingPointError, match="step 9 .*epoch 3"):
        trainer_of(model, Faulty(model, nan_grads={9: ["decoders.m0.out.bias"]}), epochs=3, run_dir=tmp_path).fit(
            data_of()
        )
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-00001.pt", "epoch-00002.pt"]
    state = load_checkpoint(tmp_path / "checkpoints" / "epoch-00002.pt")
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())


def test_skip_mode_skips_the_update_and_counts_skipped_steps(tmp_path):
    model = model_of()
    faulty = Faulty(model, nan_terms={1: "rec/m0", 2: "rate/m1"}, nan_grads={6: ["encoders.m1.log_var.bias"]})
    trainer = trainer_of(model, faulty, epochs=3, run_dir=tmp_path, on_nonfinite="skip")
    history = trainer.fit(data_of())
    assert [row["skipped_steps"] for row in history] == [2, 1, 0]
    assert all(math.isfinite(row["train/loss"]) and math.isfinite(row["train/rate/m1"]) for row in history)
    for skipped in (1, 2, 6):
        assert all(torch.equal(a, b) for a, b in zip(faulty.before[skipped], faulty.before[skipped + 1])), skipped
    assert not all(torch.equal(a, b) for a, b in zip(faulty.before[3], faulty.before[4]))
    steps = {int(s["step"]) for s in trainer.optimizer.state_dict()["state"].values()}
    assert steps == {3 * 4 - 3}
    state = load_checkpoint(tmp_path / "checkpoints" / "epoch-00003.pt")
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())
    with pytest.raises(ValueError, match=r"on_nonfinite must be one of \('raise', 'skip'\), got 'ignore'"):
        trainer_of(model, faulty, on_nonfinite="ignore")


def test_skipped_steps_survive_a_mid_epoch_stop_and_resume(tmp_path):
    reference = model_of()
    expected = trainer_of(reference, Faulty(reference, nan_terms={1: "rec/m1"}), on_nonfinite="skip").fit(data_of())
    model = model_of()
    faulty = Faulty(model, nan_terms={1: "rec/m1"}, interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        trainer_of(model, faulty, run_dir=tmp_path, on_nonfinite="skip").fit(data_of())
    assert load_checkpoint(tmp_path / "checkpoints" / "epoch-00000-batch-000003.pt")["progress"]["skipped"] == 1
    resumed = model_of(seed=5)
    history = trainer_of(resumed, Faulty(resumed), run_dir=tmp_path, on_nonfinite="skip").fit(data_of())
    assert [row["skipped_steps"] for row in history] == [1, 0]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in history] == [
        {k: v for k, v in row.items() if k != "seconds"} for row in expected
    ]
    assert all(torch.equal(a, b) for a, b in zip(reference.parameters(), resumed.parameters()))


@pytest.mark.parametrize(
    "case, options",
    [
        ("beta=0", dict(beta=0.0)),
        ("beta=1e4", dict(beta=1e4)),
        ("latent_dim=1", dict(latent_dim=1)),
        ("batch of 1", dict(batch_size=1)),
        ("laplace scale 1e-4", dict(scale=1e-4)),
    ],
)
def test_extremes_train_without_nan(case, options):
    model = model_of(latent_dim=options.get("latent_dim", 2), scale=options.get("scale", 0.75))
    trainer = trainer_of(
        model,
        ELBOObjective(RateELBO("jensen")),
        epochs=1,
        batch_size=options.get("batch_size", BATCH),
        schedules={"beta": options.get("beta", 1.0)},
    )
    data = data_of(n=3 if case == "batch of 1" else SAMPLES)
    history = trainer.fit(data)
    row = history[-1]
    assert row["step"] == (3 if case == "batch of 1" else SAMPLES // BATCH)
    assert all(math.isfinite(v) for k, v in row.items() if k.startswith("train/")), case
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters()), case
