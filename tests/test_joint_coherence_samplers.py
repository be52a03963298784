"""Joint coherence from latent samplers fitted on training latents (MMVM / independent VAEs have no prior to sample)."""
from __future__ import annotations

import math
import tempfile

import pytest
import torch
from torch import Tensor, nn

from pyromm.config import ConfigError, RunConfig
from pyromm.data import MultimodalDataset, load_digits_multiview
from pyromm.distributions import GaussianMixtureSampler
from pyromm.evaluation import (
    evaluate,
    fit_latent_sampler,
    joint_coherence,
    train_modality_classifiers,
    training_latents,
)
from pyromm.evaluation.latent_samplers import decoder_latents
from pyromm.infer import ELBOObjective, RateELBO
from pyromm.likelihoods import Laplace, Normal
from pyromm.models import Modality, MultimodalVAE, SharedLatentVAE, mmvm_vae
from pyromm.nn import MLPDecoder, MLPEncoder
from pyromm.train import Exponential, Trainer

N, POSTERIOR_SCALE = 400, 0.05


pytestmark = pytest.mark.usefixtures("one_thread")


class IdentityEncoder(nn.Module):
    """q(z | x) = N(x, 0.05²): the latent is the data."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, torch.full_like(x, 2 * math.log(POSTERIOR_SCALE))


class Flip(nn.Module):
    """A classifier whose logits are the data in reverse order: predicts 1 − argmax x for two classes."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flip(-1)


def two_clusters(flip_b: bool) -> MultimodalDataset:
    """Label y ∈ {0, 1}; x_a = 3·onehot(y) + noise, x_b = 3·onehot(1 − y) + noise with ``flip_b`` (else onehot(y))."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(2, (N,), generator=g)
    onehot = nn.functional.one_hot(y, 2).float()
    data = {
        "a": 3 * onehot + 0.3 * torch.randn(N, 2, generator=g),
        "b": 3 * (onehot.flip(-1) if flip_b else onehot) + 0.3 * torch.randn(N, 2, generator=g),
    }
    return MultimodalDataset(data, labels=y)


def identity_modalities() -> list[Modality]:
    return [Modality(m, IdentityEncoder(), nn.Identity(), Normal(1, 0.1), (2,)) for m in ("a", "b")]


def test_per_modality_latents_are_sampled_jointly_and_split_per_decoder():
    """With x_b's class code reversed (and b's classifier reversing it back), samples agree only when each decoder
    gets its own slice of a joint draw of [z_a; z_b]: ≈ 1 with the joint GMM, ≈ 1/2 once the pairing of z_a
    and z_b is shuffled, ≈ 0 if b were decoded from z_a."""
    model, train = MultimodalVAE(identity_modalities(), 2), two_clusters(flip_b=True)
    classifiers = {"a": nn.Identity(), "b": Flip()}
    latents = training_latents(model, train, generator=torch.Generator().manual_seed(1))
    assert latents.shape == (N, 4)
    standardised = (latents - torch.cat([train.data["a"], train.data["b"]], -1)) / POSTERIOR_SCALE
    assert standardised.mean().abs() < 0.1 and (standardised.std() - 1).abs() < 0.1
    assert joint_coherence(model, classifiers, 100) is None  # no unconditional prior

    def coherence(sampler) -> float:
        return joint_coherence(model, classifiers, 2000, sampler=sampler, generator=torch.Generator().manual_seed(2))

    joint = fit_latent_sampler(model, train, "gmm", generator=torch.Generator().manual_seed(1), num_components=2)
    assert coherence(joint) > 0.99
    shuffled = latents.clone()
    shuffled[:, 2:] = shuffled[torch.randperm(N, generator=torch.Generator().manual_seed(3)), 2:]
    assert abs(coherence(GaussianMixtureSampler(4).fit(shuffled)) - 0.5) < 0.1
    flow = fit_latent_sampler(model, train, "maf", hidden_features=32, epochs=100, batch_size=100)
    assert coherence(flow) > 0.95
    assert coherence(joint) == coherence(joint)  # the generator fixes the draws


def test_shared_latent_models_fit_the_sampler_on_the_joint_posterior():
    model, train = SharedLatentVAE(identity_modalities(), 2, "poe"), two_clusters(flip_b=False)
    latents = training_latents(model, train, generator=torch.Generator().manual_seed(1))
    assert latents.shape == (N, 2)
    expected = (train.data["a"] + train.data["b"]) / 2  # PoE of two equal-scale experts
    assert ((latents - expected) / (POSTERIOR_SCALE / math.sqrt(2))).std().sub(1).abs() < 0.1
    sampler = fit_latent_sampler(model, train, "gmm", num_components=2)
    classifiers = {"a": nn.Identity(), "b": nn.Identity()}
    assert joint_coherence(model, classifiers, 1000, sampler=sampler) > 0.99
    z = torch.zeros(3, 2)
    assert all(v is z for v in decoder_latents(model, z).values())


def test_bad_samplers_are_named():
    model, train = MultimodalVAE(identity_modalities(), 2), two_clusters(flip_b=True)
    with pytest.raises(ValueError, match="unknown latent sampler 'kde'"):
        fit_latent_sampler(model, train, "kde")
    with pytest.raises(ValueError, match="a draw of 3 values does not split into 2 latents of 2"):
        decoder_latents(model, torch.zeros(5, 3))
    masked = MultimodalDataset(train.data, labels=train.labels, mask={"b": torch.zeros(N, dtype=torch.bool)})
    with pytest.raises(ValueError, match="observes every modality"):
        training_latents(model, masked)
    assert RunConfig(model="mmvm", latent_sampler="maf").latent_sampler == "maf"
    with pytest.raises(ConfigError, match="latent_sampler must be one of"):
        RunConfig(model="mmvm", latent_sampler="kde")


def test_evaluate_reports_the_sampler_joint_coherence_of_a_small_mmvm_run():
    train = load_digits_multiview("train", num_views=2, seed=0)
    test = load_digits_multiview("test", num_views=2, seed=0)
    torch.manual_seed(0)
    shape = (1, 8, 8)
    mods = [
        Modality(m, MLPEncoder(shape, 4, hidden=(32,)), MLPDecoder(4, shape, hidden=(32,)), Laplace(3), shape)
        for m in train.modalities
    ]
    model = mmvm_vae(mods, 4)
    steps = train.num_batches(128, drop_last=True)
    schedules = {"beta": 1.0, "alpha": Exponential(1.0, 0.0, steps)}
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(model, ELBOObjective(RateELBO("jensen")), schedules=schedules, epochs=1, batch_size=128,
                          lr=2e-3, seed=0, run_dir=run_dir, progress=False)
        trainer.fit(train)
    classifiers, _ = train_modality_classifiers(train, test, epochs=1, device="cpu", seed=0)

    def run(sampler):
        return evaluate(model, train, test, classifiers, num_train=500, joint_samples=300, latent_sampler=sampler,
                        generator=torch.Generator().manual_seed(0))

    plain, gmm = run(None), run("gmm")
    assert plain["joint_coherence"] is None and plain["joint_coherence_sampler"] is None
    assert plain["latent_sampler"] is None and gmm["latent_sampler"] == "gmm"
    assert 0.0 <= gmm["joint_coherence_sampler"] <= 1.0
    assert gmm["joint_coherence_sampler"] == run("gmm")["joint_coherence_sampler"]
    assert gmm["coherence"] == plain["coherence"]  # the other metrics draw from the generator as before
