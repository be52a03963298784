"""Rows 11, 13 and 14 of docs/reference_differences.md: each option against a hand computation of the reference."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

from pyromm.config import ConfigError, RunConfig
from pyromm.data import MultimodalDataset
from pyromm.data.batch import MultimodalBatch
from pyromm.data.files import DataFormatError
from pyromm.data.polymnist_released import load_released_polymnist
from pyromm.data.rats import NEURONS, RATS, load_rats, rat_files
from pyromm.datasets import DATASETS
from pyromm.evaluation.classifiers import train_modality_classifiers
from pyromm.nn.classifiers import ImageClassifier, MLPClassifier, ResNetClassifier
from pyromm.run import build_model, classifier_cache, load_data

# --- row 11: the MMVM code's ResNet coherence classifiers ------------------------------------------------------


def reference_block(x: torch.Tensor, block) -> torch.Tensor:
    """The reference's ResnetBlock: shortcut(x) + 0.1·conv_1(lrelu(conv_0(lrelu(x)))), LeakyReLU slope 0.2."""
    dx = F.conv2d(F.leaky_relu(x, 0.2), block.conv_0.weight, block.conv_0.bias, padding=1)
    dx = F.conv2d(F.leaky_relu(dx, 0.2), block.conv_1.weight, block.conv_1.bias, padding=1)
    shortcut = x if isinstance(block.shortcut, torch.nn.Identity) else F.conv2d(x, block.shortcut.weight)
    return shortcut + 0.1 * dx


def test_resnet_classifier_is_the_reference_network_on_a_fixed_batch():
    torch.manual_seed(0)
    classifier = ResNetClassifier(3, 28, 10).eval()
    conv, block_a, _, block_b, _, block_c, _ = classifier.features
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (3, 64, (3, 3))
    assert [(b.conv_0.in_channels, b.conv_1.out_channels) for b in (block_a, block_b, block_c)] == [
        (64, 64), (64, 128), (128, 256)
    ]
    assert (classifier.head.in_features, classifier.head.out_features) == (256 * 7 * 7, 10)
    x = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    h = reference_block(F.conv2d(x, conv.weight, conv.bias, padding=1), block_a)
    h = reference_block(F.avg_pool2d(h, 3, stride=2, padding=1), block_b)
    h = reference_block(F.avg_pool2d(h, 3, stride=2, padding=1), block_c)
    logits = F.linear(F.leaky_relu(h.reshape(2, -1), 0.2), classifier.head.weight, classifier.head.bias)
    with torch.no_grad():
        torch.testing.assert_close(classifier(x), logits)


def labelled_images(n: int) -> MultimodalDataset:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    return MultimodalDataset({"img": torch.rand(n, 1, 8, 8, generator=g), "vec": torch.rand(n, 6, generator=g)}, labels)


def test_resnet_classifiers_train_ten_epochs_of_adam_at_1e_3_in_batches_of_256():
    n = 300
    steps: dict[int, list] = {}
    seen: list[tuple[str, int]] = []

    def count_step(optimizer, args, kwargs):
        steps.setdefault(id(optimizer), [optimizer, 0])[1] += 1

    def record_batch(module, args):
        if module.training and isinstance(module, (ResNetClassifier, MLPClassifier)):
            seen.append((type(module).__name__, args[0].shape[0]))

    step_hook = register_optimizer_step_post_hook(count_step)
    batch_hook = torch.nn.modules.module.register_module_forward_pre_hook(record_batch)
    try:
        classifiers, _ = train_modality_classifiers(
            labelled_images(n), labelled_images(30), epochs=1, batch_size=32, lr=0.01, device="cpu", seed=0,
            image="resnet",
        )
    finally:
        step_hook.remove()
        batch_hook.remove()
    assert isinstance(classifiers["img"], ResNetClassifier) and isinstance(classifiers["vec"], MLPClassifier)
    (resnet_optimizer, resnet_steps), (mlp_optimizer, mlp_steps) = steps.values()
    assert type(resnet_optimizer) is torch.optim.Adam and resnet_optimizer.param_groups[0]["lr"] == 1e-3
    assert resnet_steps == 10 * math.ceil(n / 256)  # 10 epochs of ⌈300/256⌉ = 2 batches
    assert sorted({size for name, size in seen if name == "ResNetClassifier"}) == [n - 256, 256]
    # the other modalities keep the caller's recipe: 1 epoch of batches of 32 at lr 0.01
    assert type(mlp_optimizer) is torch.optim.Adam and mlp_optimizer.param_groups[0]["lr"] == 0.01
    assert mlp_steps == math.ceil(n / 32)


def test_cnn_stays_the_image_classifier_by_default():
    classifiers, _ = train_modality_classifiers(
        labelled_images(40), labelled_images(10), epochs=1, device="cpu", seed=0
    )
    assert isinstance(classifiers["img"], ImageClassifier)


def test_mmvm_code_mode_selects_the_resnet_and_the_cache_key_names_it(tmp_path):
    plain = RunConfig(model="mmvm", dataset="digits", cache_root=str(tmp_path))
    mode = plain.replace(reference="mmvm-code")
    assert plain.setting("coherence_classifier") == "cnn" and mode.setting("coherence_classifier") == "resnet"
    assert mode.replace(reference=None, coherence_classifier="resnet").setting("coherence_classifier") == "resnet"
    assert mode.replace(coherence_classifier="cnn").setting("coherence_classifier") == "cnn"
    (plain_dir, plain_key), (mode_dir, mode_key) = classifier_cache(plain), classifier_cache(mode)
    assert mode_key == plain_key + "-resnet" and mode_dir != plain_dir
    assert mode.reference_settings()["coherence_classifier"] == "resnet"


# --- rats data: fabricated files in the published format ----------------------------------------------------------

TRIALS_PER_ODOUR = 5
BINS = 280


@pytest.fixture
def rats_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for rat in RATS:
        info_path, spike_path = rat_files(tmp_path, rat)
        info_path.parent.mkdir(parents=True)
        info = np.zeros((4 * TRIALS_PER_ODOUR, 5), dtype=np.int64)
        info[:, 3] = np.tile([1, 2, 3, 4], TRIALS_PER_ODOUR)
        np.save(info_path, info)
        np.save(spike_path, rng.integers(0, 5, size=(len(info), NEURONS[rat], BINS)).astype(np.int32))
    return tmp_path


def rows(dataset: MultimodalDataset) -> set[tuple]:
    """Every sample as a hashable tuple of its label and the values of every modality."""
    values = torch.cat([dataset.data[name].reshape(len(dataset), -1) for name in dataset.modalities], 1)
    return {(int(y), *v.tolist()) for y, v in zip(dataset.labels, values)}


# --- row 13: rats without a split ---------------------------------------------------------------------------------


def test_mmvm_code_trains_and_tests_rats_on_every_sample(rats_root):
    cfg = RunConfig(model="mmvm", dataset="rats", num_views=2, data_root=str(rats_root), reference="mmvm-code")
    assert cfg.setting("rats_split") == "all"
    train, test = load_data(cfg)
    every = load_rats(rats_root, "all", rats=RATS[:2])
    assert len(train) == len(test) == len(every) == 4 * TRIALS_PER_ODOUR * 16
    for name in every.modalities:
        assert torch.equal(train.data[name], every.data[name]) and torch.equal(test.data[name], every.data[name])
    assert torch.equal(train.labels, every.labels) and torch.equal(test.labels, every.labels)


def test_rats_hold_out_a_fifth_of_each_odour_by_default(rats_root):
    cfg = RunConfig(model="mmvm", dataset="rats", num_views=2, data_root=str(rats_root))
    assert cfg.setting("rats_split") == "held_out"
    train, test = load_data(cfg)
    assert len(test) == 4 * 1 * 16 and len(train) == 4 * 4 * 16  # round(0.2 · 5) = 1 trial of each odour
    assert torch.bincount(test.labels).tolist() == [16] * 4
    assert rows(train).isdisjoint(rows(test))
    assert rows(train) | rows(test) == rows(load_rats(rats_root, "all", rats=RATS[:2]))
    held_out = load_rats(rats_root, "test", rats=RATS[:2])
    assert all(torch.equal(test.data[name], held_out.data[name]) for name in test.modalities)


def test_rats_split_is_for_rats_only():
    with pytest.raises(ConfigError, match=r"rats_split applies to datasets \('rats',\), not to 'digits'; leave it unset"):
        RunConfig(model="mmvm", dataset="digits", rats_split="all")
    assert RunConfig(model="mmvm", dataset="digits", reference="mmvm-code").setting("rats_split") == "held_out"
    assert "rats_split" not in RunConfig(model="mmvm", dataset="digits", reference="mmvm-code").reference_settings()
    assert RunConfig(model="mmvm", dataset="digits", rats_split="held_out").setting("rats_split") == "held_out"


def test_rats_classifier_cache_names_the_split():
    held_out = RunConfig(model="mmvm", dataset="rats")
    every = held_out.replace(rats_split="all")
    assert DATASETS["rats"].cache_key(every) == DATASETS["rats"].cache_key(held_out) + "-split_all"


# --- row 14: the rats encoders' log σ head ------------------------------------------------------------------------

RAT_SHAPES = {"barat": (12,), "buchanan": (10,)}


def raw_and_posterior_scales(cfg: RunConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(second encoder head h, posterior σ) of every modality on a fixed batch."""
    model = build_model(cfg.replace(latent_dim=3, hidden=[8]), RAT_SHAPES)
    g = torch.Generator().manual_seed(0)
    batch = MultimodalBatch({name: 3.0 * torch.randn(5, *shape, generator=g) for name, shape in RAT_SHAPES.items()})
    with torch.no_grad():
        posteriors = model.encode(batch)
        return {name: (model.encoders[name](x)[1], posteriors[name].base_dist.scale) for name, x in batch.data.items()}


@pytest.mark.parametrize("model_name", ["independent", "mmvm", "mopoe"])
def test_mmvm_code_rats_posterior_scale_is_exp_h_plus_1e_6(model_name):
    cfg = RunConfig(model=model_name, dataset="rats", reference="mmvm-code")
    assert cfg.setting("posterior_head") == "log_std"
    for h, scale in raw_and_posterior_scales(cfg).values():
        torch.testing.assert_close(scale, torch.exp(h) + 1e-6, rtol=0, atol=0)
    explicit = RunConfig(model=model_name, dataset="rats", posterior_head="log_std")
    for h, scale in raw_and_posterior_scales(explicit).values():
        torch.testing.assert_close(scale, torch.exp(h) + 1e-6, rtol=0, atol=0)


@pytest.mark.parametrize(
    "settings,floor",
    [
        ({"dataset": "rats"}, 1e-6),
        ({"dataset": "rats", "posterior_scale_floor": 0.0}, 0.0),
        ({"dataset": "rats", "reference": "mmvm-code", "posterior_head": "log_var"}, 0.0),
        ({"dataset": "digits", "reference": "mmvm-code"}, 0.0),
    ],
)
def test_log_var_head_gives_exp_half_h_plus_the_floor(settings, floor):
    cfg = RunConfig(model="mmvm", **settings)
    assert cfg.setting("posterior_head") == "log_var"
    for h, scale in raw_and_posterior_scales(cfg).values():
        torch.testing.assert_close(scale, torch.exp(0.5 * h) + floor, rtol=0, atol=0)


def test_log_std_head_refuses_a_floor_and_other_datasets_and_models():
    with pytest.raises(ConfigError, match="posterior_scale_floor does not apply with posterior_head='log_std'"):
        RunConfig(model="mmvm", dataset="rats", reference="mmvm-code", posterior_scale_floor=0.0)
    with pytest.raises(ConfigError, match=r"posterior_head applies to datasets \('rats',\), not to 'polymnist'"):
        RunConfig(model="mmvm", dataset="polymnist", posterior_head="log_std")
    with pytest.raises(ConfigError, match=r"posterior_head applies to models .*, not to 'mvae'"):
        RunConfig(model="mvae", dataset="rats", posterior_head="log_std")


def test_rats_mode_records_what_it_changes():
    assert RunConfig(model="mmvm", dataset="rats", reference="mmvm-code").reference_settings() == {
        "latent_max_iter": 10000, "test_drop_last": True, "coherence_classifier": "resnet", "rats_split": "all",
        "posterior_head": "log_std", "latent_probe_features": "training_epoch",
    }


def _write_released(root, split, views, labels):
    """Released-layout PNGs: view m's image of tuple i has every pixel (i, m, label) · 10."""
    for m in range(views):
        folder = root / split / f"m{m}"
        folder.mkdir(parents=True)
        for i, label in enumerate(labels):
            pixels = np.full((28, 28, 3), (i * 10, m * 10, label * 10), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.{label}.png")


def test_released_polymnist_files_are_read_as_the_reference_reads_them(tmp_path):
    """Row 12: tuple i is file <i>.<label>.png of every view, label from the name, (3, 28, 28) uint8 RGB."""
    _write_released(tmp_path, "train", 2, [7, 1, 4, 0, 9, 3, 2, 8, 5, 6, 1, 2])
    _write_released(tmp_path, "test", 2, [3, 3])
    cfg = RunConfig(dataset="polymnist", num_views=2, released_path=str(tmp_path))
    train, test = DATASETS["polymnist"].load(cfg)
    assert train.labels.tolist() == [7, 1, 4, 0, 9, 3, 2, 8, 5, 6, 1, 2] and test.labels.tolist() == [3, 3]
    for m in range(2):
        x = train.data[f"m{m}"]
        assert x.dtype == torch.uint8 and tuple(x.shape) == (12, 3, 28, 28)
        expected = torch.tensor([[i * 10, m * 10, label * 10] for i, label in enumerate(train.labels.tolist())])
        assert torch.equal(x[:, :, 5, 5], expected.to(torch.uint8))


def test_released_polymnist_views_must_hold_the_same_files(tmp_path):
    _write_released(tmp_path, "train", 2, [7, 1])
    (tmp_path / "train" / "m1" / "1.1.png").unlink()
    with pytest.raises(DataFormatError, match="hold different files \\(first difference: 1.1.png\\)"):
        load_released_polymnist(tmp_path, "train", 2)
    (tmp_path / "train" / "m1" / "notes.txt").write_text("x")
    with pytest.raises(DataFormatError, match="notes.txt is not named <index>.<label>.png"):
        load_released_polymnist(tmp_path, "train", 2)
