"""Bimodal CelebA (Sutter et al., 2020): a face and the text of its attributes."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pyromm.data.celeba import load_celeba
from pyromm.datasets.dataset import register_dataset
from pyromm.datasets.published import PublishedFormat

if TYPE_CHECKING:
    from pyromm.config import RunConfig
    from pyromm.data.dataset import MultimodalDataset

SEED = 0  # the texts' attribute order and offsets do not depend on the run's seed


class CelebA(PublishedFormat):
    name = "celeba"
    doc = ("CelebA faces (image, 3x64x64) with their attribute text (text, 256 character codes: a 'categorical' "
           "likelihood with num_classes 41); 40 attribute labels")
    provenance = (
        "celeba: CelebA (Liu et al., 2015; mmlab.ie.cuhk.edu.hk/projects/CelebA.html, non-commercial research use) "
        "with the attribute text of bimodal CelebA (Sutter et al., 2020)"
    )

    def load(self, cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
        """The train and test partitions, reading only the first train_limit / test_limit images."""
        train, test = (
            load_celeba(cfg.data_root, split, limit=limit, seed=SEED)
            for split, limit in (("train", cfg.train_limit), ("test", cfg.test_limit))
        )
        return train, test


register_dataset(CelebA())
