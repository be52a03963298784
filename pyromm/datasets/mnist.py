"""MNIST: the four md5-checked idx files that PolyMNIST, MNIST + spoken digits and MNIST-SVHN are made from."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pyromm.datasets.steps import prepare_mnist, mnist_lines
from pyromm.datasets.dataset import SourceDataset, register_dataset


class MNIST(SourceDataset):
    name = "mnist"
    doc = "the MNIST idx files (LeCun et al.), the source of the MNIST-based datasets; prepared, not trained on"
    provenance = (
        "MNIST (LeCun, Cortes & Burges): the four official idx files, md5-checked, from yann.lecun.com/exdb/mnist "
        "(mirror: ossci-datasets.s3.amazonaws.com/mnist)"
    )

    def prepare(self, options: Any, root: Path, cache: Path) -> None:
        """Verify the md5s of the four idx files, downloading missing ones into the data root."""
        prepare_mnist(root)

    def describe(self, root: Path, cache: Path) -> list[str]:
        return mnist_lines(root)


register_dataset(MNIST())
