"""MNIST + spoken digits: each MNIST image paired with an FSDD recording of its digit, test speaker held out."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyromm.data import cache_root, drop_increasing_with_label, load_mnist_fsdd
from pyromm.datasets.steps import prepare_fsdd, prepare_mnist, prepare_mnist_fsdd
from pyromm.datasets.dataset import Dataset, register_dataset
from pyromm.options import ConfigError, option

if TYPE_CHECKING:
    from pyromm.config import RunConfig
    from pyromm.data.dataset import MultimodalDataset

SEED = 0  # the pairs do not depend on the run's seed, so every run shares them


@dataclass(frozen=True)
class MNISTFSDDOptions:
    sound_missing_max: float = option(0.0, "p in [0, 1]: the training sound of digit y is missing with probability "
                                      "p·y/9 (missing not at random); the test split stays complete")


class MNISTFSDD(Dataset):
    name = "mnist_fsdd"
    doc = "MNIST images (1x28x28) paired with spoken digits (FSDD log-mel spectrograms, 1x32x128); needs MNIST, FSDD"
    provenance = (
        "MNIST + spoken digits: each MNIST image paired (seeded) with an FSDD recording of its digit; test recordings "
        "from a speaker held out of training (theo)"
    )
    Options = MNISTFSDDOptions
    spectrogram_modalities = ("sound",)
    sources = ("mnist", "fsdd")

    def check(self, cfg: RunConfig) -> None:
        if not 0.0 <= cfg.sound_missing_max <= 1.0:
            raise ConfigError(f"sound_missing_max must lie in [0, 1], got {cfg.sound_missing_max}")

    def make_missing(self, cfg: RunConfig, train: MultimodalDataset) -> MultimodalDataset:
        """The training sound of digit y missing with probability ``sound_missing_max`` · y / 9."""
        if cfg.sound_missing_max == 0.0:
            return train
        return drop_increasing_with_label(train, "sound", cfg.sound_missing_max, num_classes=10, seed=cfg.seed)

    def load(self, cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
        cache = cache_root(cfg.cache_root)
        train, test = (load_mnist_fsdd(cfg.data_root, split, seed=SEED, cache_dir=cache) for split in ("train", "test"))
        return train, test

    def prepare(self, options: MNISTFSDDOptions, root: Path, cache: Path) -> None:
        """MNIST's files, FSDD's recordings and spectrograms, then both splits paired."""
        prepare_mnist(root)
        prepare_fsdd(root, cache)
        prepare_mnist_fsdd(root, cache, SEED)


register_dataset(MNISTFSDD())
