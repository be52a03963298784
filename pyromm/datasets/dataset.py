"""A dataset as runs use it: its own options, its train and test splits, how to prepare its files, what is present.

A dataset is one file that subclasses :class:`Dataset` and registers an instance with :func:`register_dataset`;
from then on ``RunConfig(dataset=<name>)``, ``pyromm train --set dataset=<name>`` and ``pyromm data prepare <name>``
select it, its options are config keys, and ``pyromm datasets`` lists them.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pyromm.data.dataset import MultimodalDataset
from pyromm.options import NoOptions, Registry

if TYPE_CHECKING:
    from pyromm.config import RunConfig


class Dataset(ABC):
    """A multimodal dataset.

    ``name`` is the config's ``dataset``; ``Options`` a dataclass of its own options (read as ``cfg.<option>``);
    ``provenance`` one line on where the data come from. ``seeded``: the data themselves depend on ``cfg.seed``.
    ``spectrogram_modalities``: modalities holding (1, F, T) spectrograms, which get the spectrogram conv nets.
    ``trainable``: False for a source that other datasets are made from (``load`` then refuses).
    """

    name: ClassVar[str]
    doc: ClassVar[str]
    provenance: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    seeded: ClassVar[bool] = False
    spectrogram_modalities: ClassVar[tuple[str, ...]] = ()
    trainable: ClassVar[bool] = True

    @abstractmethod
    def load(self, cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
        """The full (train, test) splits (``pyromm.run.load_data`` cuts and drops modalities afterwards)."""

    def prepare(self, options: object, root: Path, cache: Path) -> None:
        """Verify (and, where the network allows, download) the files under ``root`` and generate what is cached
        under ``cache``, printing one line per step; ``options`` is an instance of ``Options``. By default there is
        nothing to prepare."""
        print(f"  {self.name}: nothing to prepare")

    def check(self, cfg: RunConfig) -> None:
        """Raise ``ConfigError`` for option values that cannot go together (called when a RunConfig is made)."""

    def make_missing(self, cfg: RunConfig, train: MultimodalDataset) -> MultimodalDataset:
        """The training split with the dataset's own missingness applied (missing not at random); by default none."""
        return train

    def cache_key(self, cfg: RunConfig) -> str:
        """What names a variant of the data in caches (the coherence classifiers'): the name and the options."""
        options = dataclasses.asdict(cfg.dataset_options)
        return "-".join([self.name, *(f"{key}{value}" for key, value in options.items())])

    def describe(self, root: Path, cache: Path) -> list[str]:
        """Lines for ``pyromm data list``: which of the dataset's files are present under ``root``/``cache``."""
        return []


DATASETS: Registry[Dataset] = Registry("dataset")


def register_dataset(dataset: Dataset) -> Dataset:
    """Make ``dataset`` selectable as ``dataset = dataset.name``."""
    return DATASETS.register(dataset)
