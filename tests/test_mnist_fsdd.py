"""MNIST + spoken digits: seeded same-digit pairing, speaker-disjoint splits, label-dependent sound missingness,
spectrogram networks and classifier, and the dataset through the batch contract and pyromm.run."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from pyromm.config import ConfigError, RunConfig
from pyromm.data import MultimodalDataset, drop_increasing_with_label, load_mnist_fsdd, md5sum
from pyromm.data.fsdd import load_fsdd_spectrograms, parse_recording_name, recordings_of
from pyromm.data.mnist_fsdd import pair_by_label, split_speakers
from pyromm.nn import SpectrogramConvDecoder, SpectrogramConvEncoder
from pyromm.nn.classifiers import SpectrogramClassifier, classifier_for
from pyromm.methods.common import build_modalities
from pyromm.run import load_data

MNIST_FILES = [f"mnist/{n}" for n in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                      "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")]


def fabricate_fsdd(root: Path, names: list[str]) -> dict[str, str]:
    """0.3 s sine recordings (pitch by digit and take) under ``root/fsdd/recordings``; returns their manifest."""
    directory = root / "fsdd" / "recordings"
    directory.mkdir(parents=True)
    manifest = {}
    for k, name in enumerate(names):
        frequency = 300.0 + 250.0 * parse_recording_name(name).digit + 7.0 * k
        samples = 0.5 * np.sin(2 * np.pi * frequency * np.arange(2400) / 8000)
        with wave.open(str(directory / name), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(8000)
            f.writeframes(np.round(samples * 32767).astype("<i2").tobytes())
        manifest[name] = md5sum(directory / name)
    return manifest


def labels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, n)


def test_pairing_is_seeded_and_matches_labels():
    images, sounds = labels(500), np.repeat(np.arange(10), 7)
    first = pair_by_label(images, sounds, np.random.default_rng(3))
    assert np.array_equal(first, pair_by_label(images, sounds, np.random.default_rng(3)))
    assert not np.array_equal(first, pair_by_label(images, sounds, np.random.default_rng(4)))
    assert np.array_equal(sounds[first], images)


def test_pairing_uses_every_sound_of_a_digit_equally_often():
    images, sounds = labels(1000), np.repeat(np.arange(10), 6)
    uses = np.bincount(pair_by_label(images, sounds, np.random.default_rng(0)), minlength=60).reshape(10, 6)
    assert (uses.max(1) - uses.min(1) <= 1).all()


def test_pairing_needs_a_sound_for_every_digit():
    with pytest.raises(ValueError, match="no sound has label 9"):
        pair_by_label(np.array([0, 9]), np.array([0, 1]), np.random.default_rng(0))


def test_train_and_test_speakers_are_disjoint_and_cover_fsdd():
    recordings = recordings_of({f"{d}_{s}_0.wav": "" for d in range(10) for s in ("ann", "bob", "theo")})
    train, test = split_speakers(recordings, "train"), split_speakers(recordings, "test")
    assert test == ["theo"] and train == ["ann", "bob"]
    with pytest.raises(ValueError, match="subset of the speakers"):
        split_speakers(recordings, "test", test_speakers=("zoe",))
    with pytest.raises(ValueError, match="leave no speaker"):
        split_speakers(recordings, "train", test_speakers=("ann", "bob", "theo"))


def test_sound_missingness_grows_with_the_label():
    y = torch.from_numpy(labels(20000))
    dataset = MultimodalDataset({"image": torch.zeros(20000, 1), "sound": torch.zeros(20000, 1)}, y)
    dropped = drop_increasing_with_label(dataset, "sound", 0.9, seed=1)
    missing = ~dropped.mask["sound"]
    rates = np.array([float(missing[y == c].float().mean()) for c in range(10)])
    assert rates[0] == 0.0 and (np.diff(rates) > 0).all()
    assert np.allclose(rates, 0.9 * np.arange(10) / 9, atol=0.04)
    assert bool(dropped.mask["image"].all())
    assert torch.equal(drop_increasing_with_label(dataset, "sound", 0.9, seed=1).mask["sound"], dropped.mask["sound"])
    with pytest.raises(ValueError, match="max_probability"):
        drop_increasing_with_label(dataset, "sound", 1.5)


def test_spectrogram_networks_follow_the_shape_contract():
    encoder, decoder = SpectrogramConvEncoder(8), SpectrogramConvDecoder(8)
    loc, log_var = encoder(torch.rand(5, 1, 32, 128))
    assert loc.shape == log_var.shape == (5, 8)
    assert decoder(torch.randn(5, 8)).shape == (5, 1, 32, 128)
    with pytest.raises(ValueError, match=r"\(1, F, T\) with T divisible by 4"):
        SpectrogramConvEncoder(8, (1, 32, 30))


def test_spectrogram_classifier_is_chosen_for_spectrograms():
    classifier = classifier_for((1, 32, 128), 10, spectrogram=True)
    assert isinstance(classifier, SpectrogramClassifier)
    assert classifier(torch.rand(4, 1, 32, 128)).shape == (4, 10)
    assert classifier.config()["type"] == "SpectrogramClassifier"


def test_run_builds_spectrogram_nets_for_sound_and_per_modality_likelihoods():
    cfg = RunConfig(dataset="mnist_fsdd", network="conv", latent_dim=4, modality_likelihoods={"sound": "normal"})
    image, sound = build_modalities(cfg, {"image": (1, 28, 28), "sound": (1, 32, 128)})
    assert isinstance(sound.encoder, SpectrogramConvEncoder) and type(sound.likelihood).__name__ == "Normal"
    assert type(image.likelihood).__name__ == "Laplace"
    assert image.decoder(torch.randn(2, 4)).shape == (2, 1, 28, 28)
    with pytest.raises(ConfigError, match="unknown modality 'audio'"):
        build_modalities(cfg.replace(modality_likelihoods={"audio": "normal"}), {"image": (1, 28, 28)})
    with pytest.raises(ConfigError, match="'sound_missing_max' is an option of dataset mnist_fsdd, not of model 'mmvm' "
                                          "or dataset 'digits'"):
        RunConfig(dataset="digits", sound_missing_max=0.5)


@pytest.fixture
def fabricated_root(tmp_path: Path, require_shared_file) -> tuple[Path, dict[str, str]]:
    """A data root with the real MNIST (linked) and a fabricated FSDD: 10 digits x speakers ann, bob, theo."""
    shared = require_shared_file(*MNIST_FILES)
    (tmp_path / "mnist").symlink_to(shared / "mnist")
    names = [f"{d}_{s}_{k}.wav" for d in range(10) for s in ("ann", "bob", "theo") for k in range(2)]
    return tmp_path, fabricate_fsdd(tmp_path, names)


def test_dataset_meets_the_batch_contract(fabricated_root):
    root, manifest = fabricated_root
    test = load_mnist_fsdd(root, "test", manifest=manifest, cache_dir=root / "cache")
    assert len(test) == 10000 and test.event_shapes == {"image": (1, 28, 28), "sound": (1, 32, 128)}
    assert test.metadata["speakers"] == ["theo"] and test.metadata["num_recordings"] == 20
    batch = next(test.batches(64))
    assert batch.data["sound"].dtype == torch.float32 and 0.0 <= float(batch.data["sound"].min())
    assert float(batch.data["sound"].max()) <= 1.0 and batch.mask is None
    spectrograms, recordings = load_fsdd_spectrograms(root, cache_dir=root / "cache", manifest=manifest)
    digit_of = {spectrograms[i].tobytes(): r.digit for i, r in enumerate(recordings) if r.speaker == "theo"}
    sounds = test.data["sound"][:200, 0].numpy()
    assert [digit_of[s.tobytes()] for s in sounds] == test.labels[:200].tolist()


def test_run_loads_mnist_fsdd_with_sound_missing_not_at_random(fabricated_root, monkeypatch):
    root, manifest = fabricated_root
    monkeypatch.setattr("pyromm.data.fsdd.fsdd_manifest", lambda: manifest)
    cfg = RunConfig(dataset="mnist_fsdd", data_root=str(root), cache_root=str(root / "cache"), train_limit=3000,
                    test_limit=100, sound_missing_max=0.9)
    train, test = load_data(cfg)
    assert len(train) == 3000 and len(test) == 100 and test.mask is None
    assert set(train.metadata["speakers"]).isdisjoint(test.metadata["speakers"])
    observed = train.mask["sound"]
    assert bool(observed[train.labels == 0].all()) and float(observed[train.labels == 9].float().mean()) < 0.3
    assert bool(train.mask["image"].all())


def test_real_mnist_fsdd_test_split(require_shared_file, tmp_path):
    root = require_shared_file(*MNIST_FILES, "fsdd/recordings/9_theo_49.wav", "fsdd/recordings/0_george_0.wav")
    test = load_mnist_fsdd(root, "test", cache_dir=tmp_path)
    assert len(test) == 10000 and test.metadata["num_recordings"] == 500
    assert test.data["sound"].shape == (10000, 1, 32, 128)
