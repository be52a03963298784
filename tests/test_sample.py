"""Unconditional generation: ``model.sample(n)`` of every built-in model, and the fitted latent samplers stored with
a run that the models without an unconditional prior (MMVM VAE, independent VAEs) generate through."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import pyromm
import pyromm.evaluation
from pyromm.data import MultimodalDataset
from pyromm.distributions import maf
from pyromm.generation import (
    LATENT_SAMPLER_FILE,
    LatentSamplerFileError,
    fit_and_save_latent_sampler,
    fit_generation_sampler,
    load_latent_sampler,
    save_latent_sampler,
)
from pyromm.infer import ELBOObjective, RateELBO, SubsetHMC
from pyromm.likelihoods import Bernoulli, Categorical, Normal
from pyromm.models import (
    JNF,
    MMVAE,
    MMVAEPlus,
    MVAE,
    MVTCAE,
    EncoderHead,
    JointEncoder,
    JointEncoderVAE,
    Modality,
    SharedLatentVAE,
    independent_vaes,
    mmvm_vae,
)
from pyromm.config import RunConfig
from pyromm.models.joint_sampling import NoLatentSamplerError
from pyromm.run import run
from pyromm.nn import MLPDecoder, MLPEncoder
from pyromm.train import Trainer

D, S, P, N = 2, 2, 1, 64
SHAPES = {"vec": (4,), "img": (1, 3, 3), "cls": (2,)}
CLASSES = 3

pytestmark = pytest.mark.usefixtures("one_thread")


def modalities(latent_dim: int) -> list[Modality]:
    """A Normal vector (its decoder with dropout, so eval mode matters), a Bernoulli image and a categorical pair."""
    return [
        Modality("vec", MLPEncoder(SHAPES["vec"], latent_dim, (8,)),
                 nn.Sequential(MLPDecoder(latent_dim, SHAPES["vec"], (8,)), nn.Dropout(0.5)), Normal(1), SHAPES["vec"]),
        Modality("img", MLPEncoder(SHAPES["img"], latent_dim, (8,)), MLPDecoder(latent_dim, SHAPES["img"], (8,)),
                 Bernoulli(3), SHAPES["img"]),
        Modality("cls", MLPEncoder(SHAPES["cls"], latent_dim, (8,), num_classes=CLASSES),
                 MLPDecoder(latent_dim, SHAPES["cls"], (8,), num_classes=CLASSES), Categorical(1, CLASSES),
                 SHAPES["cls"]),
    ]


def joint_encoder(mods: list[Modality]) -> JointEncoder:
    heads = {m.name: EncoderHead(MLPEncoder(m.event_shape, D, (8,), num_classes=CLASSES if m.name == "cls" else None))
             for m in mods}
    return JointEncoder(heads, {n: 2 * D for n in heads}, D, hidden=(8,))


def jmvae(alpha: float) -> JointEncoderVAE:
    mods = modalities(D)
    return JointEncoderVAE(mods, D, joint_encoder(mods), alpha=alpha)


def jnf() -> JNF:
    mods = modalities(D)
    flows = {m.name: maf(D, 1, 4, 1) for m in mods}
    return JNF(mods, D, joint_encoder(mods), flows, SubsetHMC(num_samples=1, num_warmup=2, num_chains=1))


def mmvae() -> MMVAE:
    model = MMVAE(modalities(D), D)
    model.prior_logits.data = torch.tensor([0.7, -0.4])  # a learnt, non-uniform prior scale
    return model


PRIOR_MODELS = {
    "avg": lambda: SharedLatentVAE(modalities(D), D, "avg"),
    "poe": lambda: SharedLatentVAE(modalities(D), D, "poe"),
    "moe": lambda: SharedLatentVAE(modalities(D), D, "moe"),
    "mopoe": lambda: SharedLatentVAE(modalities(D), D, "mopoe"),
    "mvae": lambda: MVAE(modalities(D), D),
    "mvtcae": lambda: MVTCAE(modalities(D), D),
    "jmvae": lambda: jmvae(0.5),
    "telbo": lambda: jmvae(0.0),
    "jnf": jnf,
    "mmvae": mmvae,
    "mmvae_plus": lambda: MMVAEPlus(modalities(S + P), S, P),
}
SAMPLER_MODELS = {
    "mmvm": lambda: mmvm_vae(modalities(D), D, alpha=0.2),
    "independent": lambda: independent_vaes(modalities(D), D),
}


def random_data(n: int = N) -> MultimodalDataset:
    g = torch.Generator().manual_seed(3)
    data = {
        "vec": torch.randn(n, *SHAPES["vec"], generator=g),
        "img": torch.rand(n, *SHAPES["img"], generator=g),
        "cls": torch.randint(CLASSES, (n, *SHAPES["cls"]), generator=g),
    }
    return MultimodalDataset(data, labels=torch.randint(2, (n,), generator=g))


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = {**PRIOR_MODELS, **SAMPLER_MODELS}[name]()
    if name in SAMPLER_MODELS:
        fit_generation_sampler(model, random_data(), "gmm", num_components=2, generator=torch.Generator().manual_seed(1))
    return model


def decoded_means(model: nn.Module, latents: dict[str, Tensor]) -> dict[str, Tensor]:
    """E[p(x_m | z_m)] by hand from the decoder networks (eval mode): Normal loc, Bernoulli sigmoid(logits),
    categorical argmax of the logits."""
    model.eval()
    with torch.no_grad():
        out = {m: model.decoders[m](z) for m, z in latents.items()}
    return {"vec": out["vec"], "img": torch.sigmoid(out["img"]), "cls": out["cls"].argmax(-1)}


def seed_global_from(generator: torch.Generator) -> None:
    """The documented seeding rule: the global RNG seeded with one draw of the generator."""
    torch.manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))


@pytest.mark.parametrize("name", [*PRIOR_MODELS, *SAMPLER_MODELS])
def test_sample_gives_every_modality_reproducibly_in_eval_mode(name):
    model = build(name).train()
    n = 5
    state = torch.get_rng_state()
    first = model.sample(n, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state), "a seeded sample() must leave the global RNG alone"
    assert model.training, "sample() must restore the train/eval mode"
    assert set(first) == set(SHAPES)
    for m, shape in SHAPES.items():
        assert first[m].shape == (n, *shape), m
        assert not first[m].requires_grad and first[m].device == model.device
    assert first["cls"].dtype == torch.long and bool(((first["cls"] >= 0) & (first["cls"] < CLASSES)).all())
    assert bool(((first["img"] > 0) & (first["img"] < 1)).all())
    again = model.sample(n, generator=torch.Generator().manual_seed(7))
    other = model.sample(n, generator=torch.Generator().manual_seed(8))
    assert all(torch.equal(first[m], again[m]) for m in SHAPES)
    assert not torch.equal(first["vec"], other["vec"])
    rows = torch.stack([first["vec"][j] for j in range(n)])
    assert len({tuple(r.tolist()) for r in rows}) == n, "every row is its own joint draw"


def prior_latents(name: str, model: nn.Module, n: int) -> dict[str, Tensor]:
    """The latent each decoder takes, drawn by hand from the model's prior with the global RNG."""
    names = list(SHAPES)
    if name == "mmvae":
        scale = torch.softmax(model.prior_logits.detach(), -1) * D
        return dict.fromkeys(names, torch.distributions.Laplace(torch.zeros(D), scale).sample((n,)))
    if name == "mmvae_plus":
        z = torch.distributions.Laplace(torch.zeros(n, S), torch.ones(n, S)).sample()
        return {m: torch.cat([torch.distributions.Laplace(torch.zeros(n, P), torch.ones(n, P)).sample(), z], -1)
                for m in names}
    return dict.fromkeys(names, torch.randn(n, D))


@pytest.mark.parametrize("name", list(PRIOR_MODELS))
def test_sample_decodes_latents_drawn_from_the_prior(name):
    model = build(name).train()
    n = 6
    samples = model.sample(n, generator=torch.Generator().manual_seed(11))
    with torch.random.fork_rng(devices=[]):
        seed_global_from(torch.Generator().manual_seed(11))
        expected = decoded_means(model, prior_latents(name, model, n))
    for m in SHAPES:
        torch.testing.assert_close(samples[m], expected[m], msg=m)


@pytest.mark.parametrize("name", list(SAMPLER_MODELS))
def test_sample_decodes_slices_of_one_draw_of_the_attached_sampler(name):
    model = build(name)
    n = 6
    samples = model.sample(n, generator=torch.Generator().manual_seed(11))
    with torch.random.fork_rng(devices=[]):
        seed_global_from(torch.Generator().manual_seed(11))
        z = model.latent_sampler.sample(n)
    assert z.shape == (n, len(SHAPES) * D)
    expected = decoded_means(model, dict(zip(SHAPES, z.split(D, -1))))
    for m in SHAPES:
        torch.testing.assert_close(samples[m], expected[m], msg=m)


def test_a_model_without_prior_or_sampler_names_the_error_and_the_fix():
    model = mmvm_vae(modalities(D), D)
    with pytest.raises(NoLatentSamplerError, match=r"none is attached \(none was fitted or loaded\)") as err:
        model.sample(3)
    assert "pyromm.generation.fit_generation_sampler(model, train_set" in str(err.value)
    assert "pyromm.load(run_dir)" in str(err.value)
    with pytest.raises(ValueError, match="n >= 1"):
        SharedLatentVAE(modalities(D), D).sample(0)


@pytest.mark.parametrize(
    "kind, options", [("gmm", {"num_components": 2}), ("maf", {"epochs": 2, "hidden_features": 8})], ids=["gmm", "maf"]
)
def test_a_saved_and_loaded_sampler_gives_identical_samples(tmp_path, kind, options):
    torch.manual_seed(0)
    model = mmvm_vae(modalities(D), D)
    sampler = fit_generation_sampler(model, random_data(), kind, generator=torch.Generator().manual_seed(1), **options)
    assert model.latent_sampler is sampler
    assert not any("sampler" in key for key in model.state_dict()), "the sampler stays out of the model's weights"
    path = save_latent_sampler(tmp_path, sampler, model, "checkpoints/x.pt")
    assert path == tmp_path / LATENT_SAMPLER_FILE and not list(tmp_path.glob(".*.tmp"))
    expected = model.sample(7, generator=torch.Generator().manual_seed(2))
    loaded = load_latent_sampler(tmp_path)
    assert type(loaded) is type(sampler)
    model.attach_latent_sampler(loaded)
    actual = model.sample(7, generator=torch.Generator().manual_seed(2))
    for m in SHAPES:
        assert torch.equal(actual[m], expected[m]), m


def test_an_unreadable_sampler_file_is_named(tmp_path):
    (tmp_path / LATENT_SAMPLER_FILE).write_bytes(b"not a torch file")
    with pytest.raises(LatentSamplerFileError, match=f"cannot read the latent sampler .*{LATENT_SAMPLER_FILE}"):
        load_latent_sampler(tmp_path)
    with pytest.raises(FileNotFoundError, match="no latent sampler stored"):
        load_latent_sampler(tmp_path / "elsewhere")


def build_run_model(latent_dim: int) -> nn.Module:
    """The MMVM VAE of :func:`test_pyromm_load_attaches_the_stored_sampler` (its recorded builder)."""
    torch.manual_seed(0)
    return mmvm_vae(modalities(latent_dim), latent_dim, alpha=0.2)


def test_pyromm_load_attaches_the_stored_sampler_of_the_loaded_checkpoint(tmp_path):
    train = random_data()
    run_dir = tmp_path / "run"
    Trainer(build_run_model(D), ELBOObjective(RateELBO("jensen")), epochs=1, batch_size=32, run_dir=run_dir,
            progress=False, config=pyromm.builder_config(build_run_model, latent_dim=D)).fit(train)
    checkpoint = f"checkpoints/{sorted((run_dir / 'checkpoints').glob('*.pt'))[-1].name}"

    model = pyromm.load(run_dir).model
    unevaluated = f"{run_dir} stores no {LATENT_SAMPLER_FILE}, which evaluation writes unless store_latent_sampler"
    with pytest.raises(NoLatentSamplerError, match=unevaluated):
        model.sample(2)
    sampler = fit_and_save_latent_sampler(model, train, run_dir, "gmm", checkpoint=checkpoint,
                                          generator=torch.Generator().manual_seed(1))
    assert model.latent_sampler is sampler
    expected = model.sample(4, generator=torch.Generator().manual_seed(5))
    reloaded = pyromm.load(run_dir).model
    actual = reloaded.sample(4, generator=torch.Generator().manual_seed(5))
    for m in SHAPES:
        assert torch.equal(actual[m], expected[m]), m

    other = build_run_model(D)
    save_latent_sampler(run_dir, sampler, other, "checkpoints/an-older-one.pt")
    with pytest.raises(NoLatentSamplerError, match=f"fitted on the weights of checkpoints/an-older-one.pt, the loaded "
                                                   f"model holds those of {checkpoint}: evaluate the run again"):
        pyromm.load(run_dir).model.sample(2)
    save_latent_sampler(run_dir, sampler, other, checkpoint)
    with pytest.raises(NoLatentSamplerError, match=f"fitted on the weights {checkpoint} held then, and {checkpoint} "
                                                   "holds other weights now"):
        pyromm.load(run_dir).model.sample(2)
    record = torch.load(run_dir / LATENT_SAMPLER_FILE, weights_only=True)
    torch.save({**record, "format": 1}, run_dir / LATENT_SAMPLER_FILE)
    with pytest.raises(NoLatentSamplerError, match="has format 1, this pyromm reads 2: evaluate the run again"):
        pyromm.load(run_dir).model.sample(2)
    assert fit_and_save_latent_sampler(SharedLatentVAE(modalities(D), D), train, tmp_path / "prior") is None
    assert not (tmp_path / "prior").exists(), "a model with an unconditional prior stores no sampler"


@pytest.mark.parametrize("store", [True, False])
def test_an_evaluated_run_stores_the_sampler_unless_told_not_to(tmp_path, store):
    cfg = RunConfig(model="mmvm", dataset="digits", num_views=2, epochs=1, train_limit=128, test_limit=64,
                    latent_dim=2, hidden=[16], classifier_epochs=1, classifier_train_limit=128, eval_num_train=128,
                    store_latent_sampler=store)
    run(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / LATENT_SAMPLER_FILE).is_file() == store
    model = pyromm.load(tmp_path / "run").model
    if store:
        assert model.sample(3)["m0"].shape == (3, *model.modalities["m0"].event_shape)
    else:
        with pytest.raises(NoLatentSamplerError, match="which evaluation writes unless store_latent_sampler is false"):
            model.sample(3)


class IdentityEncoder(nn.Module):
    """q(z | x) = N(x, 0.05²): the latent is the data."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, torch.full_like(x, 2 * math.log(0.05))


def test_the_fitted_gmm_reproduces_the_joint_moments_of_the_posterior_means():
    """x_a, x_b ∈ R² jointly Gaussian with strong cross-modal correlation; identity encoders and decoders, so the
    posterior means are the data and sample() returns the latents: the generated pairs must have the data's mean
    and covariance, the cross-modal block included (independent per-modality samplers would give zero there)."""
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([1.0, -2.0, 0.5, 3.0])
    root = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.3, 0.8, 0.0, 0.0], [0.8, 0.1, 0.4, 0.0], [-0.5, 0.6, 0.2, 0.5]])
    x = mean + torch.randn(4000, 4, generator=g) @ root.T
    train = MultimodalDataset({"a": x[:, :2], "b": x[:, 2:]}, labels=torch.zeros(4000, dtype=torch.long))
    mods = [Modality(m, IdentityEncoder(), nn.Identity(), Normal(1, 0.1), (2,)) for m in ("a", "b")]
    model = mmvm_vae(mods, 2)
    fit_generation_sampler(model, train, "gmm", num_components=3, generator=torch.Generator().manual_seed(1))
    samples = model.sample(40000, generator=torch.Generator().manual_seed(2))
    generated = torch.cat([samples["a"], samples["b"]], -1)
    posterior_means = torch.cat([m.mean for m in model.encode(train.batch(slice(0, 4000))).values()], -1)
    torch.testing.assert_close(generated.mean(0), posterior_means.mean(0), atol=0.05, rtol=0)
    torch.testing.assert_close(generated.T.cov(), posterior_means.T.cov(), atol=0.06, rtol=0)
    assert generated.T.cov()[0, 2] > 0.6  # the cross-modal covariance (0.8 in the data) survives


def test_evaluate_scores_joint_coherence_with_a_sampler_fitted_already():
    """``evaluate(..., latent_sampler=sampler)`` draws from the sampler given (no second fit) and records its kind."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(2, (200,), generator=g)
    code = 3 * nn.functional.one_hot(y, 2).float()
    data = MultimodalDataset({m: code + 0.3 * torch.randn(200, 2, generator=g) for m in ("a", "b")}, labels=y)
    mods = [Modality(m, IdentityEncoder(), nn.Identity(), Normal(1, 0.1), (2,)) for m in ("a", "b")]
    model = mmvm_vae(mods, 2)
    fitted = fit_generation_sampler(model, data, "gmm", num_components=2, generator=torch.Generator().manual_seed(1))

    class Recorded:
        def __init__(self) -> None:
            self.draws = 0

        def sample(self, n: int) -> Tensor:
            self.draws += n
            return fitted.sample(n)

    recorded = Recorded()
    classifiers = {"a": nn.Identity(), "b": nn.Identity()}
    results = pyromm.evaluation.evaluate(model, data, data, classifiers, num_train=200, joint_samples=300,
                                         latent_sampler=recorded, generator=torch.Generator().manual_seed(0))
    assert recorded.draws == 300 and results["latent_sampler"] == "Recorded"
    assert results["joint_coherence_sampler"] > 0.95  # the two-cluster GMM generates agreeing pairs
    again = pyromm.evaluation.evaluate(model, data, data, classifiers, num_train=200, joint_samples=300,
                                       latent_sampler=fitted, generator=torch.Generator().manual_seed(0))
    assert again["latent_sampler"] == "gmm" and again["joint_coherence_sampler"] > 0.95
