"""The JNF toy dataset: a square and a circle, both full or both empty, drawn from a fixed seed when a run starts."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pyromm.data.shapes import load_shapes
from pyromm.datasets.dataset import Dataset, register_dataset

if TYPE_CHECKING:
    from pyromm.config import RunConfig
    from pyromm.data.dataset import MultimodalDataset

SEED = 0  # the data do not depend on the run's seed


class Shapes(Dataset):
    name = "shapes"
    doc = "JNF toy data: a square and a circle (1x32x32 each), both full or both empty (180,000 train / 20,000 test)"
    provenance = (
        "shapes: the toy dataset of Senellart & Allassonnière (2025, JNF), squares and circles of random widths drawn "
        "here; always available, no download"
    )

    def load(self, cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
        """The first train_limit / test_limit pairs of each split (only those are drawn)."""
        train, test = (
            load_shapes(split, seed=SEED, limit=limit)
            for split, limit in (("train", cfg.train_limit), ("test", cfg.test_limit))
        )
        return train, test

    def describe(self, root: Path, cache: Path) -> list[str]:
        return ["shapes: always available (drawn when a run starts, nothing stored)"]


register_dataset(Shapes())
