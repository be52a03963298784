"""FSDD: the 3,000 md5-checked spoken-digit recordings (and their cached spectrograms) that MNIST + spoken digits is
made from."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pyromm.datasets.steps import prepare_fsdd, fsdd_lines
from pyromm.datasets.dataset import SourceDataset, register_dataset


class FSDD(SourceDataset):
    name = "fsdd"
    doc = "the Free Spoken Digit Dataset recordings and their log-mel spectrograms; prepared, not trained on"
    provenance = (
        "FSDD (Jakobovski et al., CC BY-SA 4.0): 3,000 recordings of spoken digits, 6 speakers, md5-checked, from "
        "github.com/Jakobovski/free-spoken-digit-dataset; 32x128 log-mel spectrograms computed here"
    )

    def prepare(self, options: Any, root: Path, cache: Path) -> None:
        """Verify (download missing) the recordings and cache their log-mel spectrograms."""
        prepare_fsdd(root, cache)

    def describe(self, root: Path, cache: Path) -> list[str]:
        return fsdd_lines(root, cache)


register_dataset(FSDD())
