"""MNIST-SVHN (Shi et al., 2019): an MNIST and an SVHN image of the same digit."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyromm.data.mnist_svhn import load_mnist_svhn
from pyromm.datasets.steps import prepare_mnist
from pyromm.datasets.dataset import register_dataset
from pyromm.datasets.published import PublishedFormat
from pyromm.options import ConfigError, option

if TYPE_CHECKING:
    from pyromm.config import RunConfig
    from pyromm.data.dataset import MultimodalDataset

SEED = 0  # the pairs do not depend on the run's seed


@dataclass(frozen=True)
class MNISTSVHNOptions:
    multiplier: int = option(30, "SVHN partners per selected MNIST image (MMVAE: 30, about 6.5 GB of training pairs "
                             "in memory; lower it to save memory)")
    max_per_class: int = option(10000, "at most this many images of each digit from each dataset are paired")


class MNISTSVHN(PublishedFormat):
    name = "mnist_svhn"
    doc = "MNIST (1x28x28) paired with SVHN (3x32x32) digits of the same class, as in MMVAE; needs MNIST, gets SVHN"
    provenance = (
        "mnist_svhn: MNIST paired with SVHN (Netzer et al., 2011; ufldl.stanford.edu/housenumbers) by digit, as in "
        "MMVAE (Shi et al., 2019)"
    )
    Options = MNISTSVHNOptions
    sources = ("mnist",)

    def check(self, cfg: RunConfig) -> None:
        for name in ("multiplier", "max_per_class"):
            if getattr(cfg, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")

    def load(self, cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
        train, test = (
            load_mnist_svhn(cfg.data_root, split, multiplier=cfg.multiplier, max_per_class=cfg.max_per_class, seed=SEED)
            for split in ("train", "test")
        )
        return train, test

    def prepare(self, options: MNISTSVHNOptions, root: Path, cache: Path) -> None:
        """MNIST's files, then SVHN's (downloaded when missing), then a check that both splits pair."""
        prepare_mnist(root)
        super().prepare(options, root, cache)


register_dataset(MNISTSVHN())
