"""Reference training protocols (docs/reference_differences.md): the reference's steps replayed by hand on a fixed
batch with fixed noise, against pyromm's trainer."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from pyromm import run as run_module
from pyromm.cli import main
from pyromm.config import ConfigError, RunConfig
from pyromm.data import MultimodalDataset
from pyromm.distributions import maf
from pyromm.evaluation import encoder_means
from pyromm.evaluation.training_features import (
    TRAINING_FEATURES_FILE,
    TrainingEpochMeans,
    TrainingFeaturesError,
    read_training_features,
)
from pyromm.infer import SubsetHMC, jnf_stages
from pyromm.likelihoods import Laplace
from pyromm.models import JNF, JointEncoder, Modality
from pyromm.provenance import latest_source
from pyromm.run import evaluate_run, train
from pyromm.train import Trainer
from pyromm.train.callbacks import Callback

D, DIM, EMB, N = 3, 5, 4, 16
NAMES = ("a", "b")
LR = 1e-2


class LinearEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(DIM, 2 * D)

    def forward(self, x):
        return self.net(x).chunk(2, -1)


def tiny_jnf() -> JNF:
    torch.manual_seed(0)
    modalities = [Modality(n, LinearEncoder(), nn.Linear(D, DIM), Laplace(1, 0.75), (DIM,)) for n in NAMES]
    joint = JointEncoder({n: nn.Linear(DIM, EMB) for n in NAMES}, {n: EMB for n in NAMES}, D, hidden=(8,))
    flows = {n: maf(D, 2, 8, 2) for n in NAMES}
    return JNF(modalities, D, joint, flows, SubsetHMC(num_samples=1, num_warmup=2, num_chains=1))


def tiny_data() -> MultimodalDataset:
    g = torch.Generator().manual_seed(1)
    u = torch.randn(N, 2, generator=g)
    return MultimodalDataset(
        {m: u @ torch.randn(2, DIM, generator=g) + 0.1 * torch.randn(N, DIM, generator=g) for m in NAMES}
    )


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class FixedJointDraw:
    """Stands in for ``model.joint_posterior``: its draws are μ + σ·ε with a fixed ε; records the batches."""

    def __init__(self, joint_posterior, eps: torch.Tensor) -> None:
        self.joint_posterior, self.eps, self.batches = joint_posterior, eps, []

    def __call__(self, batch):
        q = self.joint_posterior(batch)
        q.sample = lambda: q.base_dist.loc + q.base_dist.scale * self.eps
        self.batches.append(batch)
        return q


# --- row 15: MultiVae's JNF second stage ---------------------------------------------------------------------------


def test_multivae_jnf_freezes_the_joint_encoder_before_backward_so_its_first_flow_step_is_pyromms():
    """MultiVae's first step of the flow stage, replayed: z = μ + σ·ε drawn with gradient through the joint
    encoder, then ``joint_encoder.requires_grad_(False)`` and ``decoders.requires_grad_(False)``, the loss
    −(1/B) Σ_b Σ_m log q_m(z_b | x_m,b), backward, and a fresh Adam over every parameter of the model. Autograd
    accumulates no gradient into a leaf whose requires_grad is off when backward runs, so the joint encoder and
    decoders stay as they are and the step equals pyromm's (which freezes them from the start)."""
    model = tiny_jnf()
    data = tiny_data()
    stages = jnf_stages(model, 1, 1)
    Trainer(model, stages[0].objective, stages=stages[:1], batch_size=N, lr=LR, progress=False).fit(data)
    reference = copy.deepcopy(model)
    before = snapshot(model)
    eps = torch.randn(N, D, generator=torch.Generator().manual_seed(3))
    draw = FixedJointDraw(model.joint_posterior, eps)
    model.joint_posterior = draw
    history = Trainer(model, stages[1].objective, stages=stages[1:], batch_size=N, lr=LR, progress=False).fit(data)
    batch = draw.batches[-1]  # the earlier ones are the trainer's probes of the programs

    reference.train()
    reference.requires_grad_(True)  # MultiVae's stage 1 freezes nothing; pyromm's trainer froze the flows
    leaky = copy.deepcopy(reference)  # frozen only after backward: the joint encoder would get a gradient
    q = leaky.joint_posterior(batch)
    z_leaky = q.base_dist.loc + q.base_dist.scale * eps
    (-sum(q_m.log_prob(z_leaky) for q_m in leaky.encode(batch).values()).mean()).backward()
    assert all(p.grad is not None for p in leaky.joint_encoder.parameters())
    q = reference.joint_posterior(batch)
    z = q.base_dist.loc + q.base_dist.scale * eps
    assert z.requires_grad
    reference.joint_encoder.requires_grad_(False)
    reference.decoders.requires_grad_(False)
    loss = -sum(q_m.log_prob(z) for q_m in reference.encode(batch).values()).mean()
    optimizer = torch.optim.Adam(reference.parameters(), lr=LR)
    optimizer.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in reference.joint_encoder.parameters())
    optimizer.step()

    assert abs(history[0]["train/loss"] - loss.item()) < 1e-5
    after, replayed = snapshot(model), snapshot(reference)
    moved = set()
    for key, value in before.items():
        if key.startswith(("joint_encoder.", "decoders.")):
            assert torch.equal(replayed[key], value) and torch.equal(after[key], value), key
        torch.testing.assert_close(after[key], replayed[key], rtol=0, atol=1e-6)
        if not torch.equal(after[key], value):
            moved.add(key.split(".")[0])
    assert moved == {"encoders", "flows"}


# --- row 10: the MMVM code's latent probe features ----------------------------------------------------------------


class WeightsAfterEachStep(Callback):
    """Test spy: the model's weights after every step (``log_every_steps=1``) and the batch generator's state when
    the last epoch starts."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []
        self.last_epoch_generator: torch.Tensor | None = None

    def on_step_end(self, trainer, row):
        self.weights.append(snapshot(trainer.model))

    def on_epoch_end(self, trainer, row):
        if row["epoch"] == trainer.total_epochs - 1:
            self.last_epoch_generator = trainer.generator.get_state()


def probe_run_config(**options) -> RunConfig:
    settings = dict(model="mmvm", dataset="digits", num_views=2, latent_dim=4, hidden=[16], epochs=2, batch_size=16,
                    train_limit=64, test_limit=64, classifier_epochs=1, classifier_train_limit=64, eval_num_train=40,
                    log_every_steps=1, latent_probe_features="training_epoch")
    return RunConfig(**{**settings, **options})


def test_mmvm_code_probe_trains_on_the_means_of_the_last_epochs_first_steps(tmp_path, monkeypatch):
    """The MMVM code's probe features, replayed: the last epoch's first ⌈40/16⌉ = 3 batches (the trainer's
    permutation, from its generator state when the epoch starts), each encoded in train mode by the weights before
    that step (after the previous step); the probe of ``evaluate_run`` is LogisticRegression fitted on exactly
    those, scored on the test means of the final weights."""
    cfg = probe_run_config()
    assert RunConfig(model="mmvm", reference="mmvm-code").setting("latent_probe_features") == "training_epoch"
    assert RunConfig(model="mmvm").setting("latent_probe_features") == "final"
    spy = WeightsAfterEachStep()
    monkeypatch.setattr(run_module, "build_callbacks", lambda c, build=run_module.build_callbacks: [*build(c), spy])
    model, _, train_set, test_set = train(cfg, tmp_path, progress=False)
    steps_per_epoch = len(train_set) // cfg.batch_size
    assert len(spy.weights) == 2 * steps_per_epoch

    generator = torch.Generator()
    generator.set_state(spy.last_epoch_generator)
    batches = list(train_set.batches(cfg.batch_size, shuffle=True, generator=generator, drop_last=True))[:3]
    replay = copy.deepcopy(model).train()
    expected = {name: [] for name in model.modality_names}
    for k, batch in enumerate(batches):
        replay.load_state_dict(spy.weights[steps_per_epoch - 1 + k])  # after the step before step k of the epoch
        with torch.no_grad():
            for name in expected:
                expected[name].append(replay.encoders[name](batch.data[name])[0])
    source = latest_source(tmp_path)
    recorded = read_training_features(tmp_path, source)
    assert set(recorded) == set(expected)
    for name, means in expected.items():
        x, y = recorded[name]
        assert x.shape == (48, cfg.latent_dim)
        torch.testing.assert_close(torch.from_numpy(x).float(), torch.cat(means), rtol=0, atol=1e-6)
        assert np.array_equal(y, torch.cat([b.labels for b in batches]).numpy())
    final_means = torch.cat(expected[model.modality_names[0]])
    assert not torch.allclose(final_means, model.eval().encoders[model.modality_names[0]](
        torch.cat([b.data[model.modality_names[0]] for b in batches]))[0].detach())  # the weights moved meanwhile

    results = evaluate_run(model, train_set, test_set, cfg, tmp_path, source)
    for name, (x, y) in recorded.items():
        probe = LogisticRegression(max_iter=cfg.setting("latent_max_iter")).fit(x, y)
        x_test, y_test = encoder_means(model, test_set)[name]
        assert results["latent"][name] == pytest.approx(probe.score(x_test, y_test))


def test_recorded_probe_features_are_refused_for_another_checkpoint(tmp_path):
    cfg = probe_run_config(log_every_steps=0)
    model, _, train_set, test_set = train(cfg, tmp_path, progress=False)
    source = latest_source(tmp_path)
    recorded = read_training_features(tmp_path, source)
    assert main(["evaluate", str(tmp_path)]) == 0  # pyromm evaluate reads them from the run directory
    scored = json.loads((tmp_path / "evaluation.json").read_text())
    x, y = recorded["m0"]
    probe = LogisticRegression(max_iter=cfg.setting("latent_max_iter")).fit(x, y)
    assert scored["latent"]["m0"] == pytest.approx(probe.score(*encoder_means(model, test_set)["m0"]))
    with pytest.raises(TrainingFeaturesError, match="evaluated checkpoint .* is epoch 2, step 7"):
        read_training_features(tmp_path, {**source, "step": 7})
    with pytest.raises(TrainingFeaturesError, match="of config hash other"):
        read_training_features(tmp_path, {**source, "identity": {**source["identity"], "config_hash": "other"}})
    with pytest.raises(TrainingFeaturesError, match="not loaded from a checkpoint"):
        read_training_features(tmp_path, None)
    (tmp_path / TRAINING_FEATURES_FILE).unlink()
    with pytest.raises(TrainingFeaturesError, match="latent_probe_features.pt does not exist"):
        evaluate_run(model, train_set, test_set, cfg, tmp_path)
    with pytest.raises(ConfigError, match="turn off restore_best and early_stopping_patience"):
        probe_run_config(val_fraction=0.2, restore_best=True)
    with pytest.raises(ConfigError, match="latent_probe_features applies to models"):
        RunConfig(model="mvae", latent_probe_features="training_epoch")


def test_probe_features_recording_survives_a_resume_inside_the_last_epoch():
    """A checkpoint taken between two recorded steps carries the means so far; a resumed callback continues them."""
    callback = TrainingEpochMeans(num_train=40)
    model = tiny_jnf()
    data = MultimodalDataset(tiny_data().data, labels=torch.arange(N) % 2)

    class Trainerish:
        total_epochs, batch_size, distributed, run_dir = 3, 8, None, None

    Trainerish.model = model
    batches = list(data.batches(8))
    callback.on_step_start(Trainerish, batches[0], 3)
    resumed = TrainingEpochMeans(num_train=40)
    resumed.load_state_dict(callback.state_dict())
    for c in (callback, resumed):
        c.on_step_start(Trainerish, batches[1], 3)
    assert callback.state_dict()["batches"] == resumed.state_dict()["batches"] == 2
    for name in NAMES:
        assert torch.equal(callback.state_dict()["features"][name], resumed.state_dict()["features"][name])
    assert TrainingEpochMeans(num_train=40).state_dict() == {}
