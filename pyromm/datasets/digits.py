"""Multiview digits: scikit-learn's bundled 8x8 digits in 1 to 5 textured views, generated from the run's seed."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyromm.data.digits import load_digits_multiview
from pyromm.datasets.steps import prepare_digits
from pyromm.datasets.dataset import Dataset, register_dataset
from pyromm.options import option

if TYPE_CHECKING:
    from pyromm.config import RunConfig
    from pyromm.data.dataset import MultimodalDataset


@dataclass(frozen=True)
class DigitsOptions:
    num_views: int = option(3, "number of views m0.., each the digit over its own texture", choices=(1, 2, 3, 4, 5))


class Digits(Dataset):
    name = "digits"
    doc = "scikit-learn's 8x8 digits in 1..5 textured views (1,438 train / 359 test tuples); bundled, no download"
    provenance = (
        "digits: scikit-learn's bundled 8x8 digits (UCI), 1..5 textured views generated here; always available, "
        "no download"
    )
    Options = DigitsOptions
    seeded = True

    def load(self, cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
        train, test = (load_digits_multiview(split, cfg.num_views, seed=cfg.seed) for split in ("train", "test"))
        return train, test

    def prepare(self, options: DigitsOptions, root: Path, cache: Path) -> None:
        """Load both splits: bundled with scikit-learn, nothing to download or cache."""
        prepare_digits(options.num_views)

    def describe(self, root: Path, cache: Path) -> list[str]:
        return ["digits: always available (bundled with scikit-learn)"]


register_dataset(Digits())
