"""A dataset as runs use it: its own options, its train and test splits, how to prepare its files, what is present.

A dataset is one file that subclasses :class:`Dataset` and registers an instance with :func:`register_dataset`;
from then on ``RunConfig(dataset=<name>)``, ``pyromm train --set dataset=<name>`` and ``pyromm data prepare <name>``
select it, its options are config keys, and ``pyromm datasets`` lists them.

A dataset module imports its data code (numpy, torch, the loaders of :mod:`pyromm.data`) inside ``load``,
``prepare`` and ``describe``, so that the registry (config checks, ``--help``, ``pyromm datasets``) loads in a
fraction of a second without them.
"""
from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pyromm.options import ConfigError, NoOptions, Registry

if TYPE_CHECKING:
    from pyromm.config import RunConfig
    from pyromm.data.dataset import MultimodalDataset


class Dataset(ABC):
    """A multimodal dataset.

    ``name`` is the config's ``dataset``; ``doc`` one line on what it holds; ``Options`` a dataclass of its own
    options (fields declared with :func:`pyromm.options.option`, read as ``cfg.<option>``); ``provenance`` one line
    on where the data come from. ``seeded``: the data themselves depend on ``cfg.seed``. ``spectrogram_modalities``:
    modalities holding (1, F, T) spectrograms, which get the spectrogram conv nets. ``trainable``: False for a source
    that other datasets are made from (``check`` and ``load`` then refuse); ``sources``: the datasets this one is
    made from.
    """

    name: ClassVar[str]
    doc: ClassVar[str]
    provenance: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    seeded: ClassVar[bool] = False
    spectrogram_modalities: ClassVar[tuple[str, ...]] = ()
    trainable: ClassVar[bool] = True
    sources: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def load(self, cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
        """The full (train, test) splits (``pyromm.run.load_data`` cuts and drops modalities afterwards)."""

    def check(self, cfg: RunConfig) -> None:
        """Raise ``ConfigError`` naming the option for values of this dataset's options that their declared types
        and choices let through (a range, a required value); called when a RunConfig is made. By default: none."""

    def prepare(self, options: Any, root: Path, cache: Path) -> None:
        """Verify (and, where the network allows, download) the files under ``root`` and generate what is cached
        under ``cache``, printing one line per step; ``options`` is an instance of ``Options``. By default there is
        nothing to prepare."""
        print(f"  {self.name}: nothing to prepare")

    def make_missing(self, cfg: RunConfig, train: MultimodalDataset) -> MultimodalDataset:
        """The training split with the dataset's own missingness applied (missing not at random); by default none."""
        return train

    def cache_key(self, cfg: RunConfig) -> str:
        """What names a variant of the data in caches (the coherence classifiers'): the name and the options, a
        path-like option (a string holding a separator) by the first 12 hex digits of its SHA-1, so that the key
        stays one folder name."""
        options = dataclasses.asdict(cfg.dataset_options)
        return "-".join([self.name, *(f"{key}{_key_part(value)}" for key, value in options.items())])

    def describe(self, root: Path, cache: Path) -> list[str]:
        """Lines for ``pyromm data list``, a heading first: which of the dataset's files are present under
        ``root``/``cache``. By default none."""
        return []


class SourceDataset(Dataset):
    """Files that other datasets are made from (``sources``): prepared and listed, never trained on; a RunConfig
    naming one is refused, naming the datasets made from it."""

    trainable = False

    def check(self, cfg: RunConfig) -> None:
        raise self._not_trainable()

    def load(self, cfg: RunConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
        raise self._not_trainable()

    def _not_trainable(self) -> ConfigError:
        return ConfigError(
            f"dataset {self.name!r} holds the files other datasets are made from and is not trained on itself; "
            f"train on one made from it: {', '.join(made_from(self.name))}"
        )


DATASETS: Registry[Dataset] = Registry("dataset")


def register_dataset(dataset: Dataset) -> Dataset:
    """Make ``dataset`` selectable as ``dataset = dataset.name``."""
    return DATASETS.register(dataset)


def made_from(source: str) -> list[str]:
    """The registered datasets made from the dataset ``source`` (those naming it in their ``sources``)."""
    return [dataset.name for dataset in DATASETS if source in dataset.sources]


def _key_part(value: object) -> str:
    """``value`` as part of a folder name: a string with a path separator becomes a hash of it."""
    text = str(value)
    if isinstance(value, str) and ("/" in text or "\\" in text):
        return hashlib.sha1(text.encode()).hexdigest()[:12]
    return text
