"""MNIST + spoken digits: each MNIST image paired with an FSDD recording of the same digit, an image/sound
benchmark in the spirit of MHD's image and sound modalities (Vasco et al., 2021).

Speaker-disjoint split: the test split pairs the MNIST test images with the recordings of ``TEST_SPEAKERS`` =
("theo",), the train split the MNIST training images with the other five speakers' recordings. theo was
chosen before any result was seen, as a USA/neutral-accent speaker whose accent the training speakers
still cover (jackson), so the test measures generalisation to a new voice rather than to a new accent.

Pairing, per split, from ``numpy.random.Generator(PCG64(seed))``: for each digit c = 0..9 in turn, the
split's class-c images in MNIST order receive the split's class-c recordings in the order of
ceil(n_images / n_recordings) concatenated random permutations, so every recording is used equally often
(up to one).

Modalities: "image" uint8 (1, 28, 28) and "sound" uint8 (1, 32, 128) = round(255 S), S the log-mel
spectrogram in [0, 1] of :mod:`pyromm.data.audio` (silence is 0, like the image background), both scaled to
[0, 1] when batched. Labels: the digit. Likelihood: Normal(σ = 0.1) for both (``experiments/mnist_fsdd.py``);
a Laplace likelihood regresses on the median, which for these mostly-zero images and spectrograms is a blank
output, and learned far more slowly in short runs.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from pyromm.data.audio import SpectrogramSettings
from pyromm.data.dataset import MultimodalDataset
from pyromm.data.fsdd import FSDD_SOURCE, Recording, load_fsdd_spectrograms
from pyromm.data.mnist import MNIST_MD5, load_mnist

TEST_SPEAKERS = ("theo",)


def split_speakers(recordings: Sequence[Recording], split: str, test_speakers: Sequence[str] = TEST_SPEAKERS) -> list[str]:
    """The sorted speakers of ``split``: ``test_speakers`` for "test", every other speaker for "train"."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    speakers = sorted({r.speaker for r in recordings})
    unknown = sorted(set(test_speakers) - set(speakers))
    if unknown or not test_speakers:
        raise ValueError(f"test_speakers must be a non-empty subset of the speakers {speakers}, got {list(test_speakers)}")
    train = [s for s in speakers if s not in test_speakers]
    if not train:
        raise ValueError(f"test_speakers {list(test_speakers)} leave no speaker for the train split")
    return sorted(test_speakers) if split == "test" else train


def pair_by_label(image_labels: np.ndarray, sound_labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Index into the sounds for every image, of the same label: for each label c in ascending order, the
    class-c images in order take the class-c sounds in the order of concatenated permutations drawn from
    ``rng``."""
    source = np.empty(image_labels.shape[0], dtype=np.int64)
    for c in np.unique(image_labels):
        members = np.flatnonzero(image_labels == c)
        candidates = np.flatnonzero(sound_labels == c)
        if candidates.shape[0] == 0:
            raise ValueError(f"no sound has label {c}, needed for {members.shape[0]} images")
        rounds = -(-members.shape[0] // candidates.shape[0])
        order = np.concatenate([candidates[rng.permutation(candidates.shape[0])] for _ in range(rounds)])
        source[members] = order[: members.shape[0]]
    return source


def mnist_fsdd_metadata(
    split: str, seed: int, test_speakers: Sequence[str], speakers: Sequence[str], settings: SpectrogramSettings
) -> dict[str, Any]:
    """JSON-able description of one split: pairing seed and generator, speakers, spectrogram settings, sources."""
    return {
        "dataset": "mnist_fsdd",
        "split": split,
        "seed": seed,
        "rng": "numpy.random.Generator(numpy.random.PCG64(seed))",
        "test_speakers": sorted(test_speakers),
        "speakers": list(speakers),
        "sound": "log-mel spectrogram, dB re. the recording's maximum floored at -top_db, scaled to [0, 1], "
        "stored as uint8 round(255 S)",
        "spectrogram": settings.to_dict(),
        "likelihood": "Normal(scale 0.1) for both modalities (data in [0, 1])",
        "mnist_md5": dict(MNIST_MD5),
        "fsdd_source": FSDD_SOURCE,
    }


def load_mnist_fsdd(
    root: str | os.PathLike | None = None,
    split: str = "train",
    *,
    seed: int = 0,
    test_speakers: Sequence[str] = TEST_SPEAKERS,
    cache_dir: str | os.PathLike | None = None,
    settings: SpectrogramSettings = SpectrogramSettings(),
    manifest: Mapping[str, str] | None = None,
) -> MultimodalDataset:
    """MNIST + spoken digits ``split``: modalities "image" (uint8 (1, 28, 28)) and "sound" (uint8
    (1, n_mels, frames)), labels = digit, one sample per MNIST image of the split (see the module docstring).

    ``manifest`` (name -> md5) selects the FSDD recordings (default: all 3,000); spectrograms are cached under
    ``cache_dir`` (default: the cache root).
    """
    spectrograms, recordings = load_fsdd_spectrograms(root, cache_dir=cache_dir, settings=settings, manifest=manifest)
    speakers = split_speakers(recordings, split, test_speakers)
    chosen = np.array([i for i, r in enumerate(recordings) if r.speaker in speakers], dtype=np.int64)
    digits = np.array([recordings[i].digit for i in chosen], dtype=np.int64)
    images, labels = load_mnist(root, split)
    source = chosen[pair_by_label(labels, digits, np.random.Generator(np.random.PCG64(seed)))]
    return MultimodalDataset(
        {
            "image": torch.from_numpy(np.ascontiguousarray(images[:, None])),
            "sound": torch.from_numpy(np.ascontiguousarray(spectrograms[source][:, None])),
        },
        torch.from_numpy(labels),
        metadata={
            **mnist_fsdd_metadata(split, seed, test_speakers, speakers, settings),
            "num_samples": int(labels.shape[0]),
            "num_recordings": int(chosen.shape[0]),
        },
    )
