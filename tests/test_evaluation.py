"""Evaluation metrics on a fake model that follows the inference contract and has known right answers."""
from __future__ import annotations

import json
import math
from typing import Callable

import matplotlib
import pyro.distributions as dist
import pytest
import torch
from torch import Tensor, nn

import pyromm.evaluation.classifiers as classifiers_module
from pyromm.data.batch import MultimodalBatch
from pyromm.data.dataset import MultimodalDataset
from pyromm.evaluation import (
    coherence,
    evaluate,
    latent_classification,
    plot_conditional_grid,
    plot_latent_scatter,
    plot_tradeoff,
    reconstruction_error,
    train_modality_classifiers,
)
from pyromm.nn.classifiers import ImageClassifier, MLPClassifier

K = 4  # classes
SCALE = 0.75  # Laplace scale of the fake likelihoods
TEMPLATES = torch.zeros(K, 1, 8, 8)
for _k in range(K):
    TEMPLATES[_k, 0, 2 * _k] = 1.0  # class k: a bright row 2k
T_FLAT = TEMPLATES.flatten(1).T  # (64, K)


class FakeModel(nn.Module):
    """The inference contract with hand-set encoders (x -> latent) and decoders (z -> likelihood loc).

    q(z | X_S) is a point mass (or a Normal of scale ``posterior_scale``) at Σ_{m∈S} enc_m(x_m), unobserved
    modalities contributing 0; p(x_m | z) = Laplace(dec_m(z), 0.75) over the event.
    """

    def __init__(
        self,
        encoders: dict[str, Callable[[Tensor], Tensor]],
        decoders: dict[str, Callable[[Tensor], Tensor]],
        event_dims: dict[str, int],
        weights: dict[str, float] | None = None,
        posterior_scale: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoders, self.decoders, self.event_dims = encoders, decoders, event_dims
        self.modality_names = list(encoders)
        if weights is not None:
            self.modality_weights = weights
        self.posterior_scale = posterior_scale
        self.offset = nn.Parameter(torch.zeros(()))
        self.infer_calls: list[tuple[list[str], list[str], bool]] = []
        self.encode_modes: list[tuple[bool, bool]] = []

    def _posterior(self, loc: Tensor) -> dist.TorchDistribution:
        if self.posterior_scale == 0:
            return dist.Delta(loc, event_dim=1)
        return dist.Normal(loc, self.posterior_scale).to_event(1)

    def encode(self, batch: MultimodalBatch) -> dict[str, dist.TorchDistribution]:
        self.encode_modes.append((self.training, torch.is_grad_enabled()))
        return {m: self._posterior(self.encoders[m](batch.data[m])) for m in self.modality_names if m in batch.data}

    def infer(self, batch: MultimodalBatch, subset: list[str]) -> dist.TorchDistribution:
        self.infer_calls.append((list(subset), batch.modalities, batch.mask is not None))
        locs = []
        for name in subset:
            loc = self.encoders[name](batch.data[name])
            keep = batch.observed(name)
            locs.append(loc if keep is None else loc * keep[:, None])
        return self._posterior(torch.stack(locs).sum(0))

    def decode(self, name: str, z: Tensor) -> dist.TorchDistribution:
        return dist.Laplace(self.decoders[name](z), SCALE).to_event(self.event_dims[name])

    def reconstruct(self, batch: MultimodalBatch) -> dict[str, dist.TorchDistribution]:
        z = self.infer(batch, self.modality_names).sample()
        return {m: self.decode(m, z) for m in self.modality_names}


def make_dataset(n: int, seed: int, masked_fraction: float = 0.0) -> MultimodalDataset:
    """"img": (1, 8, 8) template of the label + noise; "vec": (6,) one-hot label + noise.

    With ``masked_fraction`` that share of random samples miss "vec", whose data there show the WRONG label.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % K
    labels = labels[torch.randperm(n, generator=g)]
    img = (TEMPLATES[labels] + 0.1 * torch.rand(n, 1, 8, 8, generator=g)).clamp(0, 1)
    vec = nn.functional.one_hot(labels, 6).float() + 0.1 * torch.randn(n, 6, generator=g)
    if masked_fraction == 0:
        return MultimodalDataset({"img": img, "vec": vec}, labels)
    observed = torch.rand(n, generator=g) >= masked_fraction
    vec[~observed] = nn.functional.one_hot((labels[~observed] + 1) % K, 6).float()
    return MultimodalDataset({"img": img, "vec": vec}, labels, mask={"vec": observed})


def onehot_img(x: Tensor) -> Tensor:
    return nn.functional.one_hot((x.flatten(1) @ T_FLAT).argmax(-1), K).float()


def onehot_vec(x: Tensor) -> Tensor:
    return nn.functional.one_hot(x[:, :K].argmax(-1), K).float()


def label_model(**kwargs) -> FakeModel:
    """Latent = one-hot label; decoders draw the label's template / one-hot vector from it."""
    return FakeModel(
        {"img": onehot_img, "vec": onehot_vec},
        {
            "img": lambda z: (z @ T_FLAT.T).reshape(*z.shape[:-1], 1, 8, 8),
            "vec": lambda z: nn.functional.pad(z, (0, 2)),
        },
        {"img": 3, "vec": 1},
        **kwargs,
    )


class FixedLinear(nn.Module):
    """logits = flatten(x) @ W, a known classifier."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1).float() @ self.weight


FIXED_CLASSIFIERS = {"img": FixedLinear(T_FLAT), "vec": FixedLinear(torch.eye(6)[:, :K])}


@pytest.fixture(scope="module")
def data() -> tuple[MultimodalDataset, MultimodalDataset]:
    return make_dataset(400, seed=0), make_dataset(200, seed=1)


def test_latent_accuracy_perfect_for_label_latent_and_chance_for_noise(data):
    train, test = data
    model = label_model().train()
    assert latent_classification(model, train, test) == {"img": 1.0, "vec": 1.0}
    assert model.training and all(mode == (False, False) for mode in model.encode_modes)
    torch.manual_seed(0)
    noise = FakeModel({m: lambda x: torch.randn(x.shape[0], 8) for m in ("img", "vec")}, {}, {})
    accuracy = latent_classification(noise, train, test)
    assert all(abs(a - 1 / K) < 0.15 for a in accuracy.values()), accuracy


def test_latent_uses_first_num_train_and_excludes_masked_samples():
    train, test = make_dataset(400, seed=0, masked_fraction=0.3), make_dataset(200, seed=1, masked_fraction=0.3)
    assert latent_classification(label_model(), train, test, num_train=120) == {"img": 1.0, "vec": 1.0}


def test_coherence_of_a_perfect_model_is_one_and_infers_from_the_source_only(data):
    _, test = data
    model = label_model()
    result = coherence(model, test, FIXED_CLASSIFIERS, batch_size=64)
    assert set(result["pair"]) == {"img->img", "img->vec", "vec->img", "vec->vec"}
    assert all(v == 1.0 for v in result["pair"].values())
    assert result["cross"] == result["self"] == 1.0 and result["by_source"] == {"img": 1.0, "vec": 1.0}
    assert {(tuple(s), tuple(m), masked) for s, m, masked in model.infer_calls} == {
        (("img",), ("img",), False), (("vec",), ("vec",), False)
    }
    json.dumps(result, allow_nan=False)


def test_coherence_of_a_constant_decoder_is_the_rate_of_its_constant_prediction():
    test = make_dataset(200, seed=1, masked_fraction=0.25)
    model = FakeModel(
        {"img": onehot_img, "vec": onehot_vec},
        {
            "img": lambda z: TEMPLATES[2].expand(*z.shape[:-1], 1, 8, 8),
            "vec": lambda z: nn.functional.one_hot(torch.ones(z.shape[:-1], dtype=torch.long), 6).float(),
        },
        {"img": 3, "vec": 1},
    )
    result = coherence(model, test, FIXED_CLASSIFIERS)
    labels, observed = test.labels, test.mask["vec"]
    expected = {
        "img->img": (labels == 2).float().mean(),
        "img->vec": (labels == 1).float().mean(),
        "vec->img": (labels[observed] == 2).float().mean(),
        "vec->vec": (labels[observed] == 1).float().mean(),
    }
    for key, value in expected.items():
        assert result["pair"][key] == pytest.approx(float(value))
    assert result["cross"] == pytest.approx(float(expected["img->vec"] + expected["vec->img"]) / 2)
    assert result["self"] == pytest.approx(float(expected["img->img"] + expected["vec->vec"]) / 2)
    assert result["by_source"]["vec"] == pytest.approx(float(expected["vec->img"]))


def test_coherence_generator_is_reproducible_and_leaves_global_rng_alone(data):
    _, test = data
    model = label_model(posterior_scale=1.5)
    state = torch.get_rng_state()
    first = coherence(model, test, FIXED_CLASSIFIERS, generator=torch.Generator().manual_seed(3))
    second = coherence(model, test, FIXED_CLASSIFIERS, generator=torch.Generator().manual_seed(3))
    assert first == second and first["cross"] < 1.0
    assert torch.equal(state, torch.get_rng_state())


def offset_model(weights: dict[str, float] | None) -> FakeModel:
    """Latent = [flatten(x_a), x_b]; decoders return the data shifted by +0.1 (a) and -0.2 (b)."""
    return FakeModel(
        {"a": lambda x: nn.functional.pad(x.flatten(1), (0, 5)), "b": lambda x: nn.functional.pad(x, (16, 0))},
        {"a": lambda z: z[..., :16].reshape(*z.shape[:-1], 1, 4, 4) + 0.1, "b": lambda z: z[..., 16:] - 0.2},
        {"a": 3, "b": 1},
        weights=weights,
    )


@pytest.mark.parametrize("weights", [None, {"a": 1.0, "b": 3.0}])
def test_reconstruction_matches_hand_computed_laplace_nll_and_excludes_masked(weights):
    g = torch.Generator().manual_seed(0)
    n = 50
    a, b = torch.rand(n, 1, 4, 4, generator=g), torch.randn(n, 5, generator=g)
    observed = torch.arange(n) % 5 != 0
    b[~observed] = 100.0  # garbage where "b" is missing: any leak would blow the averages up
    test = MultimodalDataset({"a": a, "b": b}, torch.zeros(n, dtype=torch.long), mask={"b": observed})
    result = reconstruction_error(offset_model(weights), test, batch_size=16)
    w_b = 1.0 if weights is None else weights["b"]
    nll_a = 16 * (0.1 / SCALE + math.log(2 * SCALE))  # −log Laplace = |x − μ|/s + log 2s per dimension
    nll_b = w_b * 5 * (0.2 / SCALE + math.log(2 * SCALE))
    for kind in ("joint", "self"):
        assert result[kind]["nll"]["a"] == pytest.approx(nll_a, rel=1e-5)
        assert result[kind]["nll"]["b"] == pytest.approx(nll_b, rel=1e-5)
        assert result[kind]["nll_sum"] == pytest.approx(nll_a + nll_b, rel=1e-5)
        assert result[kind]["mse"]["a"] == pytest.approx(0.01, rel=1e-4)
        assert result[kind]["mse"]["b"] == pytest.approx(0.04, rel=1e-4)
        assert result[kind]["mse_mean"] == pytest.approx(0.025, rel=1e-4)


def test_evaluate_returns_json_friendly_summary(data):
    train, test = data
    result = evaluate(label_model(), train, test, FIXED_CLASSIFIERS, num_train=200)
    json.dumps(result, allow_nan=False)
    assert result["latent_acc_mean"] == 1.0 and result["coherence_cross_mean"] == 1.0
    assert result["rec_nll"] == result["reconstruction"]["joint"]["nll_sum"]
    assert result["rec_mse"] == result["reconstruction"]["joint"]["mse_mean"]
    assert result["num_classes"] == K


def test_classifier_shapes():
    assert ImageClassifier(3, 28)(torch.rand(2, 3, 28, 28)).shape == (2, 10)
    assert ImageClassifier(1, 8, num_classes=4)(torch.rand(2, 1, 8, 8)).shape == (2, 4)
    assert MLPClassifier(6, 4)(torch.rand(2, 6)).shape == (2, 4)
    assert MLPClassifier(3, 4, input_classes=5)(torch.randint(5, (2, 3))).shape == (2, 4)
    with pytest.raises(ValueError, match="at least"):
        ImageClassifier(1, 3)


def test_classifier_training_and_cache_round_trip(data, tmp_path, monkeypatch):
    train, test = data
    kwargs = dict(epochs=8, batch_size=64, lr=3e-3, device="cpu", seed=0, cache_dir=tmp_path)
    trained, accuracy = train_modality_classifiers(train, test, cache_key="k1", **kwargs)
    assert isinstance(trained["img"], ImageClassifier) and isinstance(trained["vec"], MLPClassifier)
    assert all(a > 0.9 for a in accuracy.values()), accuracy
    sidecar = json.loads((tmp_path / "classifier_img.json").read_text())
    assert sidecar["cache_key"] == "k1" and sidecar["test_accuracy"] == accuracy["img"]
    assert sidecar["architecture"]["type"] == "ImageClassifier"

    def no_training(*args, **kw):
        raise AssertionError("the cached classifier should have been loaded")

    monkeypatch.setattr(classifiers_module, "fit_classifier", no_training)
    loaded, loaded_accuracy = train_modality_classifiers(train, test, cache_key="k1", **kwargs)
    assert loaded_accuracy == accuracy
    for name in trained:
        for key, value in trained[name].state_dict().items():
            assert torch.equal(value, loaded[name].state_dict()[key])

    calls = []
    monkeypatch.setattr(classifiers_module, "fit_classifier", lambda *a, **kw: calls.append(a[2]))
    train_modality_classifiers(train, test, cache_key="k2", **kwargs)
    assert calls == ["img", "vec"]


def test_plots_write_png_files_without_touching_the_backend(data, tmp_path):
    train, test = data
    backend = matplotlib.get_backend()
    rows = [
        {"model": model, "beta": beta, "rec_error": 10 * beta + i, "latent_acc": 0.5 + 0.1 * i + 0.01 * beta}
        for i, model in enumerate(["mmvm", "joint"])
        for beta in (0.25, 1.0, 4.0)
    ]
    two_d = FakeModel({"img": lambda x: x.flatten(1)[:, :2], "vec": lambda x: x[:, :2]}, {}, {})
    paths = [
        plot_tradeoff(rows, tmp_path / "tradeoff.png"),
        plot_latent_scatter(label_model(), test, tmp_path / "scatter_pca.png", max_points=100),
        plot_latent_scatter(two_d, test, tmp_path / "scatter_2d.png", modalities=["vec"]),
        plot_conditional_grid(label_model(), make_dataset(20, 2, 0.2), tmp_path / "grid.png", num_examples=6),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert matplotlib.get_backend() == backend
